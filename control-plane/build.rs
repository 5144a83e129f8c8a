// `sqlx::migrate!` embeds the migrations when the crate compiles; without this, adding a
// migration file alone would not rebuild it, and the binary would run without the migration.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
