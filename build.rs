// (in progress: issue 4 adds nvcc + simulator builds)
fn main() {}
