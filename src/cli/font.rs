//! The TrueType font of plot text, found at run time. plotters is built with `ab_glyph`
//! (pure Rust, no fontconfig), which draws text only with a registered font. Shared by the
//! sweep plots and the criterion benches (`benches/common` includes this file).

use std::path::PathBuf;
use std::sync::OnceLock;

use plotters::style::FontStyle;

/// Registers a TrueType font as plotters' "sans-serif", once: `WGPU_MHA_FONT`, else the
/// first of the usual system fonts found. Its path, or None when none was found
/// (`WGPU_MHA_FONT=none` forces that).
pub fn sans_serif() -> Option<&'static PathBuf> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("WGPU_MHA_FONT") {
            Some(v) if v.is_empty() || v == "none" => return None,
            Some(v) => vec![PathBuf::from(v)],
            None => [
                // Debian/Ubuntu fonts-dejavu-core, Fedora, Arch
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
                "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
                "/System/Library/Fonts/Supplemental/Arial.ttf",
                "/Library/Fonts/Arial.ttf",
                "C:\\Windows\\Fonts\\arial.ttf",
                "C:\\Windows\\Fonts\\segoeui.ttf",
            ]
            .map(PathBuf::from)
            .to_vec(),
        };
        candidates.into_iter().find(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the life of the process; this happens once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
    .as_ref()
}
