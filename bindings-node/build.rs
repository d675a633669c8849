//! napi-rs build setup (link flags for a Node.js addon).
fn main() {
    napi_build::setup();
}
