mod common;
use common::*;
use wgpu_mha::*;

#[test]
fn self_attention_matches_reference() {
    let gpu = gpu();
    let mut rng = rng();
    let config = MhaConfig::new(32, 4);
    let weights = MhaWeights::random(&config, &mut rng);
    let mha = MultiHeadAttention::new(&gpu, config, &weights).unwrap();
    let x = random(&mut rng, &[9, 2, 32], 1.0);
    let opts = MhaOptions {
        need_weights: true,
        ..Default::default()
    };
    let got = mha.forward(&x, &x, &x, &opts).unwrap();
    let want = reference::mha_forward(&config, &weights, &x, &x, &x, &opts).unwrap();
    let (r, a) = tolerance(&want.attn_output);
    eprintln!(
        "{}",
        assert_close("out", &got.attn_output, &want.attn_output, r, a)
    );
    assert_close(
        "w",
        got.attn_weights.as_ref().unwrap(),
        want.attn_weights.as_ref().unwrap(),
        r,
        a,
    );
}
