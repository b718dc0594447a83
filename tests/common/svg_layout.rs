//! Laying out a rendered SVG in a test: the font set-up and the boxes of its elements. For
//! the chart tests (include it with `#[path = "common/svg_layout.rs"] mod svg_layout;`).
#![allow(dead_code)]

use resvg::usvg;

/// usvg options with the system's fonts, so that text gets its real extent.
pub fn options() -> usvg::Options<'static> {
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    options
}

/// An axis-aligned box on the canvas.
#[derive(Debug, Clone, Copy)]
pub struct Box2 {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

impl Box2 {
    /// Whether the two boxes share any area.
    pub fn overlaps(&self, other: &Box2) -> bool {
        self.left < other.right
            && other.left < self.right
            && self.top < other.bottom
            && other.top < self.bottom
    }
}

impl From<usvg::Rect> for Box2 {
    fn from(r: usvg::Rect) -> Self {
        Box2 {
            left: r.left(),
            top: r.top(),
            right: r.right(),
            bottom: r.bottom(),
        }
    }
}
