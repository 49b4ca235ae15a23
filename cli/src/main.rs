//! The `pvabi` command-line tool.
fn main() {
    println!("pvabi: nothing here yet");
}
