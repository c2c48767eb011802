//! What the benchmarks count: the device peaks `tmoe bench` takes its
//! shares of.

use traffic_moe::backend::gpu::executor::{SpecPeaks, device_info_for, spec_peaks};

#[test]
fn device_peaks_follow_the_device_name() {
    let p = |name: &str| spec_peaks(name);
    let both = |bw: f64, fl: f64| SpecPeaks {
        bandwidth: Some(bw),
        bf16_flops: Some(fl),
    };
    // The names the driver reports (nvidia-smi's), data-sheet figures.
    assert_eq!(p("NVIDIA H200"), both(4.8e12, 989.4e12));
    assert_eq!(p("NVIDIA H200 NVL"), both(4.8e12, 835.5e12));
    assert_eq!(p("NVIDIA H100 80GB HBM3"), both(3.35e12, 989.4e12));
    assert_eq!(p("NVIDIA H100 PCIe"), both(2.0e12, 756.5e12));
    assert_eq!(p("NVIDIA H100 NVL"), both(3.9e12, 835.5e12));
    assert_eq!(p("NVIDIA A100-SXM4-80GB"), both(2.039e12, 312e12));
    assert_eq!(p("NVIDIA A100-SXM4-40GB"), both(1.555e12, 312e12));
    // A GH200's memory is not in its name: the clock query decides.
    assert_eq!(p("NVIDIA GH200 480GB").bandwidth, None);
    assert_eq!(p("NVIDIA GH200 480GB").bf16_flops, Some(989.4e12));

    // The driver's memory clock x bus width first; without it the data
    // sheet of the device the name says (not an H200's for every device),
    // and for a device not in the table no peak at all.
    let info = device_info_for("NVIDIA H200".into(), Some(4.814e12), None);
    assert_eq!(info.peak_bandwidth, Some(4.814e12));
    let cases = [
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H100 PCIe", 2.0e12),
    ];
    for (name, bw) in cases {
        let info = device_info_for(name.into(), None, None);
        assert_eq!(info.peak_bandwidth, Some(bw), "{name}");
    }
    let info = device_info_for("fake CUDA driver (SIMT simulator)".into(), None, None);
    assert_eq!((info.peak_bandwidth, info.peak_bf16_flops), (None, None));
    let info = device_info_for("NVIDIA GH200 480GB".into(), Some(4.0e12), None);
    assert_eq!(info.peak_bandwidth, Some(4.0e12));
}
