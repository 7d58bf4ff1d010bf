fn main() {
    eprintln!("netkit-cni: not implemented yet");
    std::process::exit(1);
}
