//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs, not
//! a stable API): the private parsers of this crate, on untrusted text.

/// What the `call.` scanner of a custom rule finds in `source`: the fields
/// named as `call.<field>` (in order, repeats kept) and whether `call` is
/// also used on its own. Runs on any text, valid CEL or not.
pub fn call_fields(source: &str) -> (Vec<&str>, bool) {
    crate::engine::call_fields(source)
}
