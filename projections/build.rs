//! Rebuild when a migration is added: `sqlx::migrate!` embeds `../migrations` at compile time
//! and cannot track new files itself on stable Rust (sqlx's documented build-script fix).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
