//! Nothing here: the model checks are in `tests/loom.rs`, run with
//! `RUSTFLAGS="--cfg loom" cargo test -p poolwarden-loom --release`.
