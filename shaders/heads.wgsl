// Shared by qk.wgsl and av.wgsl: which (batch, query head, key/value head) a launch's z
// index works on. A block of the score matrix covers `batch_count` whole batches starting at
// `batch0`, all heads of each, so z = local_batch · heads_q + h. Grouped-query attention maps
// query head h to key/value head h / group.

struct Head {
    batch: u32,
    head_q: u32,
    head_kv: u32,
}

fn head_of(z: u32, batch0: u32, heads_q: u32, group: u32) -> Head {
    let h = z % heads_q;
    return Head(batch0 + z / heads_q, h, h / group);
}
