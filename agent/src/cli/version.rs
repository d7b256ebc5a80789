//! `edge-agent version`.

pub(crate) fn print() {
    println!("edge-agent {} ({})", crate::VERSION, crate::TARGET);
    println!("control protocol v{}", crate::control::PROTOCOL_VERSION);
}
