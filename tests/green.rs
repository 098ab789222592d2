//! Green accounting: sysfs energy readers on fake trees (wraparound, odd content), NVML against a
//! fake libnvidia-ml built with the system C compiler, Apple's IOReport channels as plain values,
//! budget -> rho on the SmolLM2-135M config, the run card, and a budgeted run end to end on the
//! tiny Llama.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use greentrainer::device::ComputeDevice;
use greentrainer::eval::rouge::CorpusRouge;
use greentrainer::green::Footprint;
use greentrainer::green::apple::{self, Channel};
use greentrainer::green::budget::{Budget, RunPlan};
use greentrainer::green::carbon::parse_intensity;
use greentrainer::green::card::RunCard;
use greentrainer::green::meter::{
    self, EnergySource, Meter, amdgpu_sensors, apple_gpu_sensor, ioreport_sensor, nvml_sensors, rapl_sensors,
};
use greentrainer::model::config::LlamaConfig;
use greentrainer::model::llama::llama_ops;
use greentrainer::profile::{BatchShape, profile};
use greentrainer::train::{Event, MethodKind, RunControl, TrainConfig, Trainer};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn rapl_tree(root: &Path) {
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0\n");
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "1000\n");
    write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "1000000\n");
    // A subzone (part of package 0), the platform domain, and a zone with junk: all skipped.
    write(root, "sys/class/powercap/intel-rapl:0:0/name", "core\n");
    write(root, "sys/class/powercap/intel-rapl:0:0/energy_uj", "5\n");
    write(root, "sys/class/powercap/intel-rapl:1/name", "psys\n");
    write(root, "sys/class/powercap/intel-rapl:1/energy_uj", "7\n");
    write(root, "sys/class/powercap/intel-rapl:2/name", "package-1\n");
    write(root, "sys/class/powercap/intel-rapl:2/energy_uj", "not a number\n");
}

#[test]
fn rapl_counts_packages_across_wraparound() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    rapl_tree(root);
    let sensors = rapl_sensors(root);
    assert_eq!(sensors.len(), 1, "only package 0 is readable and not overlapping");
    let mut meter = Meter::from_sensors(sensors);
    let counter = "sys/class/powercap/intel-rapl:0/energy_uj";
    write(root, counter, "501000");
    meter.sample();
    write(root, counter, "999000");
    meter.sample();
    // Wrapped at 1e6 uJ: 1000 uJ to the top, then 2000 uJ.
    write(root, counter, "2000");
    let energy = meter.finish(1e12, meter::CPU);
    assert!((energy.joules - (0.5 + 0.498 + 0.003)).abs() < 1e-9, "{}", energy.joules);
    assert_eq!(energy.source, EnergySource::Measured { sensors: vec!["RAPL intel-rapl:0 package-0".into()] });
}

#[test]
fn unreliable_counters_fall_back_to_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0");
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "1000");
    // No max_energy_range_uj: a counter going backwards cannot be trusted.
    let mut meter = Meter::from_sensors(rapl_sensors(root));
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "10");
    meter.sample();
    assert_eq!(meter.measured_joules(), None);
    let energy = meter.finish(5e9 * 3600.0, meter::CPU);
    assert!((energy.wh() - 1.0).abs() < 1e-12);
    assert!(matches!(energy.source, EnergySource::Estimated { .. }));

    // A file turning into junk mid-run, and an empty tree.
    write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "100000");
    let mut meter = Meter::from_sensors(rapl_sensors(root));
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "\u{0}\u{1}garbage");
    meter.sample();
    assert_eq!(meter.measured_joules(), None);
    let empty = tempfile::tempdir().unwrap();
    assert!(rapl_sensors(empty.path()).is_empty() && amdgpu_sensors(empty.path()).is_empty());
    assert_eq!(Meter::from_sensors(Vec::new()).measured_joules(), None);
}

#[test]
fn amdgpu_power_is_integrated_and_energy_counters_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/name", "amdgpu\n");
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/power1_average", "50000000\n");
    write(root, "sys/class/drm/card0-DP-1/device/hwmon/hwmon4/name", "amdgpu\n");
    write(root, "sys/class/drm/card0-DP-1/device/hwmon/hwmon4/power1_average", "1\n");
    write(root, "sys/class/drm/card1/device/hwmon/hwmon5/name", "nouveau\n");
    write(root, "sys/class/drm/card1/device/hwmon/hwmon5/power1_average", "1\n");
    let outer = Instant::now();
    let mut meter = Meter::from_sensors(amdgpu_sensors(root));
    let inner = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let inner_s = inner.elapsed().as_secs_f64();
    meter.sample();
    let outer_s = outer.elapsed().as_secs_f64();
    let j = meter.measured_joules().unwrap();
    assert!(50.0 * inner_s <= j && j <= 50.0 * outer_s, "{j} J for {inner_s}..{outer_s} s at 50 W");

    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/energy1_input", "100");
    let meter = Meter::from_sensors(amdgpu_sensors(root));
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/energy1_input", "2000100");
    let energy = meter.finish(0.0, meter::GPU);
    assert!((energy.joules - 2.0).abs() < 1e-9);
    assert_eq!(energy.source, EnergySource::Measured { sensors: vec!["amdgpu card0/hwmon3/energy1_input".into()] });
}

/// The NVML calls nvml-wrapper makes here, answering from `$STATE_DIR/gpus`: one GPU a line,
/// `<pci bus> <energy mJ> <power mW> <name>`, where `-` is NOT_SUPPORTED and `x` an unknown error.
/// The file is read on every call, so a test changes the counters by rewriting it.
const FAKE_NVML: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char legacy[16]; unsigned domain, bus, device, pci_device_id, subsystem_id; char bus_id[32]; } pci_info;
static int handles[16];

static int row(unsigned i, unsigned *bus, char *energy, char *power, char *name) {
    FILE *f = fopen(STATE_DIR "/gpus", "r");
    char line[256];
    int found = 0;
    for (unsigned n = 0; f && fgets(line, sizeof line, f); n++) {
        if (n == i) { found = sscanf(line, "%u %31s %31s %127[^\n]", bus, energy, power, name) == 4; break; }
    }
    if (f) fclose(f);
    return found;
}

static int value(const char *text, unsigned long long *out) {
    if (!strcmp(text, "-")) return 3;
    if (!strcmp(text, "x")) return 999;
    *out = strtoull(text, NULL, 10);
    return 0;
}

#define ROW(dev) unsigned bus; char energy[32], power[32], name[128]; \
    if (!row((unsigned)((int *)(dev) - handles), &bus, energy, power, name)) return 2;

int nvmlInit_v2(void) { return INIT_RESULT; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { (void)r; return "fake NVML error"; }
int nvmlDeviceGetCount_v2(unsigned *count) {
    unsigned bus; char e[32], p[32], name[128];
    for (*count = 0; *count < 16 && row(*count, &bus, e, p, name); ++*count) {}
    return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **dev) {
    unsigned count;
    nvmlDeviceGetCount_v2(&count);
    if (i >= count) return 2;
    *dev = &handles[i];
    return 0;
}
int nvmlDeviceGetName(void *dev, char *out, unsigned len) { ROW(dev) snprintf(out, len, "%s", name); return 0; }
int nvmlDeviceGetPciInfo_v3(void *dev, pci_info *out) {
    ROW(dev) memset(out, 0, sizeof *out);
    out->bus = bus;
    snprintf(out->bus_id, sizeof out->bus_id, "00000000:%02X:00.0", bus);
    return 0;
}
int nvmlDeviceGetTotalEnergyConsumption(void *dev, unsigned long long *mj) { ROW(dev) return value(energy, mj); }
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } memory_info_v2;
/* Every fake GPU has as many GiB as its PCI bus number. */
int nvmlDeviceGetMemoryInfo_v2(void *dev, memory_info_v2 *out) {
    ROW(dev) out->total = (unsigned long long)bus << 30;
    out->reserved = out->used = 0;
    out->free = out->total;
    return 0;
}
int nvmlDeviceGetPowerUsage(void *dev, unsigned *mw) {
    ROW(dev) unsigned long long v;
    int r = value(power, &v);
    *mw = (unsigned)v;
    return r;
}
"#;

/// Builds the fake libnvidia-ml in `dir` (its state file is `dir/gpus`); `init_result` is what
/// nvmlInit_v2 returns (0, or 9: driver not loaded).
fn fake_nvml(dir: &Path, init_result: u32) -> PathBuf {
    fs::write(dir.join("fake_nvml.c"), FAKE_NVML).unwrap();
    let lib = dir.join(format!("libnvidia-ml-{init_result}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(format!("-DSTATE_DIR={:?}", dir.to_str().unwrap()))
        .arg(format!("-DINIT_RESULT={init_result}"))
        .arg(dir.join("fake_nvml.c"))
        .status()
        .unwrap_or_else(|e| panic!("the NVML tests build a fake libnvidia-ml with the system C compiler `cc`, which could not run: {e}"));
    assert!(status.success(), "cc failed to build the fake libnvidia-ml ({status})");
    lib
}

/// A GPU run on an adapter with this name and PCI address.
fn gpu_device(name: &str, pci_bus_id: Option<&str>) -> ComputeDevice {
    ComputeDevice {
        backend: greentrainer::device::BackendKind::Wgpu,
        name: name.into(),
        pci_bus_id: pci_bus_id.map(Into::into),
        ..ComputeDevice::cpu()
    }
}

fn measured(sensors: &[&str]) -> EnergySource {
    EnergySource::Measured { sensors: sensors.iter().map(|s| s.to_string()).collect() }
}

#[test]
fn nvml_energy_counter_is_read_on_the_run_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml(dir.path(), 0);
    let gpus =
        |a100_mj: u64, t4_mj: u64| write(dir.path(), "gpus", &format!("1 {a100_mj} 250000 NVIDIA A100\n2 {t4_mj} 70000 NVIDIA T4\n"));
    gpus(1_000_000, 5_000);
    let sysfs = tempfile::tempdir().unwrap();

    // By PCI address (wgpu writes a 4-digit domain, NVML 8), then by name.
    let meter = Meter::open(sysfs.path(), Some(&lib), &gpu_device("NVIDIA A100 / Vulkan", Some("0000:01:00.0")));
    gpus(3_500_000, 9_000);
    let energy = meter.finish(1e15, meter::GPU);
    assert!((energy.joules - 2500.0).abs() < 1e-9, "{}", energy.joules);
    assert_eq!(energy.source, measured(&["NVML total energy: NVIDIA A100"]));
    let meter = Meter::open(sysfs.path(), Some(&lib), &gpu_device("NVIDIA T4 / Vulkan", None));
    gpus(3_500_000, 10_250);
    let energy = meter.finish(1e15, meter::GPU);
    assert!((energy.joules - 1.25).abs() < 1e-9, "{}", energy.joules);
    assert_eq!(energy.source, measured(&["NVML total energy: NVIDIA T4"]));

    // An adapter matching none by name: every GPU is read and labelled so; by PCI address: none
    // (the run is not on an NVIDIA GPU), and a CPU run reads no GPU.
    let mut meter = Meter::from_sensors(nvml_sensors(Some(&lib), &gpu_device("llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan", None)));
    gpus(3_600_000, 10_500);
    meter.sample();
    gpus(3_700_000, 11_000);
    let energy = meter.finish(1e15, meter::GPU);
    assert!((energy.joules - (200.0 + 0.75)).abs() < 1e-9, "{}", energy.joules);
    assert_eq!(
        energy.source,
        measured(&[
            "NVML total energy: NVIDIA A100 (GPU 0, one of 2 read: the run's adapter is not identified)",
            "NVML total energy: NVIDIA T4 (GPU 1, one of 2 read: the run's adapter is not identified)",
        ])
    );
    assert!(nvml_sensors(Some(&lib), &gpu_device("Intel(R) Arc(tm) / Vulkan", Some("0000:03:00.0"))).is_empty());
    assert!(nvml_sensors(Some(&lib), &gpu_device("NVIDIA T4 / Vulkan", Some("0000:03:00.0"))).is_empty());
    assert!(matches!(
        Meter::open(sysfs.path(), Some(&lib), &ComputeDevice::cpu()).finish(1e9, meter::CPU).source,
        EnergySource::Estimated { .. }
    ));

    // A counter going backwards (driver reload) cannot be trusted: the estimate is used.
    let meter = Meter::open(sysfs.path(), Some(&lib), &gpu_device("NVIDIA A100 / Vulkan", None));
    gpus(10, 11_000);
    let energy = meter.finish(5e10 * 3600.0, meter::GPU);
    assert!((energy.wh() - 1.0).abs() < 1e-12 && matches!(energy.source, EnergySource::Estimated { .. }));
}

#[test]
fn nvml_power_is_sampled_and_integrated_without_an_energy_counter() {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml(dir.path(), 0);
    write(dir.path(), "gpus", "1 - 150000 Tesla P100\n");
    let device = gpu_device("Tesla P100 / Vulkan", None);
    let outer = Instant::now();
    let meter = Meter::open(tempfile::tempdir().unwrap().path(), Some(&lib), &device);
    let inner = Instant::now();
    std::thread::sleep(Duration::from_millis(350));
    let inner_s = inner.elapsed().as_secs_f64();
    let energy = meter.finish(0.0, meter::GPU);
    let outer_s = outer.elapsed().as_secs_f64();
    assert!(
        150.0 * inner_s <= energy.joules && energy.joules <= 150.0 * outer_s,
        "{} J for {inner_s}..{outer_s} s at 150 W",
        energy.joules
    );
    assert_eq!(energy.source, measured(&["NVML power x time: Tesla P100"]));

    // The sampler thread reads between the meter's own samples: a failed read while the run
    // makes none still voids the measurement.
    let mut meter = Meter::from_sensors(nvml_sensors(Some(&lib), &device));
    write(dir.path(), "gpus", "1 - x Tesla P100\n");
    std::thread::sleep(Duration::from_millis(350));
    write(dir.path(), "gpus", "1 - 150000 Tesla P100\n");
    meter.sample();
    assert_eq!(meter.measured_joules(), None);
    // A GPU reading neither energy nor power has no sensor.
    write(dir.path(), "gpus", "1 - - Tesla P100\n");
    assert!(nvml_sensors(Some(&lib), &device).is_empty());
}

#[test]
fn nvml_missing_library_or_driver_means_no_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let device = gpu_device("NVIDIA A100 / Vulkan", None);
    assert!(nvml_sensors(Some(&dir.path().join("libnvidia-ml.so.1")), &device).is_empty());
    let no_driver = fake_nvml(dir.path(), 9);
    write(dir.path(), "gpus", "1 1000 250000 NVIDIA A100\n");
    assert!(nvml_sensors(Some(&no_driver), &device).is_empty());
    let energy = Meter::open(dir.path(), Some(&no_driver), &device).finish(5e10, meter::GPU);
    assert_eq!((energy.joules, &energy.source), (1.0, &EnergySource::Estimated { flops_per_joule: 5e10, device_class: "GPU".into() }));
}

/// An "Energy Model" channel.
fn channel(name: &str, unit: &str, value: i64) -> Channel {
    Channel { group: apple::ENERGY_GROUP.into(), name: name.into(), unit: unit.into(), value }
}

/// An IOReport reader answering these deltas in turn, then None.
fn ioreport(deltas: Vec<Option<Vec<Channel>>>) -> apple::Deltas {
    let mut deltas = deltas.into_iter();
    Box::new(move || deltas.next().flatten())
}

fn names(channels: &[&str]) -> Vec<String> {
    channels.iter().map(|s| s.to_string()).collect()
}

#[test]
fn apple_gpu_channels_and_units() {
    assert_eq!(apple::to_joules("mJ", 1500), Some(1.5));
    assert_eq!(apple::to_joules("uJ", 2_000_000), Some(2.0));
    assert_eq!(apple::to_joules(" nJ ", 750_000_000), Some(0.75));
    assert_eq!(apple::to_joules("nJ", 0), Some(0.0));
    for unknown in ["J", "mW", "", "MJ"] {
        assert_eq!(apple::to_joules(unknown, 5), None, "{unknown:?}");
    }
    assert_eq!(apple::to_joules("mJ", -1), None, "a counter going backwards");

    // M1 to M4: the whole-GPU counter beside its blocks, which are not added to it; a channel of
    // another group with the same name is not energy.
    let m2 = [
        channel("ECPU0", "mJ", 10),
        channel("CPU Energy", "mJ", 900),
        channel("GPU0", "mJ", 700),
        channel("GPU SRAM0", "mJ", 30),
        channel("GPU Energy", "nJ", 750_000_000),
        channel("ANE", "mJ", 0),
        channel("DRAM", "mJ", 120),
        Channel { group: "GPU Stats".into(), name: "GPU Energy".into(), unit: "mJ".into(), value: 99 },
    ];
    let chosen = apple::gpu_channels(&m2);
    assert_eq!(chosen, names(&["GPU Energy"]));
    assert_eq!(apple::gpu_joules(&chosen, &m2), Some(0.75));
    assert_eq!(apple::label(&chosen), "Apple GPU energy (IOReport GPU Energy)");

    // Without "GPU Energy" the least specific level present counts, in mixed units, each once.
    let dies = [channel("GPU0_0", "mJ", 400), channel("GPU1_0", "uJ", 350_000), channel("GPU SRAM0_0", "mJ", 20)];
    let chosen = apple::gpu_channels(&dies);
    assert_eq!(chosen, names(&["GPU0_0", "GPU1_0"]));
    assert!((apple::gpu_joules(&chosen, &dies).unwrap() - 0.75).abs() < 1e-12);
    let nested = [channel("GPU0_0", "mJ", 400), channel("GPU0", "mJ", 450), channel("GPU1", "nJ", 50_000_000)];
    assert_eq!(apple::gpu_channels(&nested), names(&["GPU0", "GPU1"]));
    assert!((apple::gpu_joules(&names(&["GPU0", "GPU1"]), &nested).unwrap() - 0.5).abs() < 1e-12);
    let bare = [channel("GPU", "mJ", 250), channel("GPU0", "mJ", 240)];
    assert_eq!(apple::gpu_channels(&bare), names(&["GPU"]));

    // A chosen channel missing from a delta, or in an unknown unit, voids it; no GPU, no channels.
    assert_eq!(apple::gpu_joules(&names(&["GPU Energy"]), &dies), None);
    assert_eq!(apple::gpu_joules(&names(&["GPU Energy"]), &[channel("GPU Energy", "mW", 5)]), None);
    let no_gpu = [channel("CPU Energy", "mJ", 900), channel("GPU SRAM0", "mJ", 30), channel("GPUX", "mJ", 1), channel("GPU0_", "mJ", 1)];
    assert!(apple::gpu_channels(&no_gpu).is_empty());
}

#[test]
fn ioreport_gpu_energy_is_summed_over_the_run() {
    let m3 = |gpu_nj: i64, cpu_mj: i64| Some(vec![channel("CPU Energy", "mJ", cpu_mj), channel("GPU Energy", "nJ", gpu_nj)]);
    // The first delta (at open) only finds the channels; the run's energy is what follows.
    let sensor = ioreport_sensor(ioreport(vec![m3(3_000_000, 12), m3(1_250_000_000, 900), m3(2_500_000_000, 800)])).unwrap();
    let mut meter = Meter::from_sensors(vec![sensor]);
    meter.sample();
    let energy = meter.finish(1e15, meter::GPU);
    assert!((energy.joules - 3.75).abs() < 1e-12, "{}", energy.joules);
    assert_eq!(energy.source, measured(&["Apple GPU energy (IOReport GPU Energy)"]));

    let dies = |a_mj: i64, b_uj: i64| Some(vec![channel("GPU0", "mJ", a_mj), channel("GPU1", "uJ", b_uj)]);
    let sensor = ioreport_sensor(ioreport(vec![dies(1, 1), dies(400, 350_000)])).unwrap();
    let energy = Meter::from_sensors(vec![sensor]).finish(1e15, meter::GPU);
    assert!((energy.joules - 0.75).abs() < 1e-12, "{}", energy.joules);
    assert_eq!(energy.source, measured(&["Apple GPU energy (IOReport GPU0 + GPU1)"]));

    // A failed sample, or a unit turning unknown mid-run: the estimate is used.
    let sensor = ioreport_sensor(ioreport(vec![m3(0, 0), None, m3(1_000_000_000, 5)])).unwrap();
    let mut meter = Meter::from_sensors(vec![sensor]);
    meter.sample();
    let energy = meter.finish(5e10 * 3600.0, meter::GPU);
    assert!((energy.wh() - 1.0).abs() < 1e-12 && matches!(energy.source, EnergySource::Estimated { .. }));
    let odd = Some(vec![channel("GPU Energy", "pJ", 5)]);
    let meter = Meter::from_sensors(vec![ioreport_sensor(ioreport(vec![m3(0, 0), odd])).unwrap()]);
    assert!(matches!(meter.finish(1.0, meter::GPU).source, EnergySource::Estimated { .. }));

    // No sensor without a GPU channel, with the GPU in an unknown unit, or without a first sample.
    assert!(ioreport_sensor(ioreport(vec![Some(vec![channel("CPU Energy", "mJ", 5), channel("GPU SRAM0", "mJ", 1)])])).is_none());
    assert!(ioreport_sensor(ioreport(vec![Some(vec![channel("GPU Energy", "W", 5)])])).is_none());
    assert!(ioreport_sensor(ioreport(vec![None, m3(1, 1)])).is_none());
}

#[test]
fn apple_gpu_is_read_only_for_a_metal_run() {
    let metal = gpu_device("Apple M2 Max / Metal", None);
    assert!(apple::on_metal(&metal));
    assert!(!apple::on_metal(&ComputeDevice { software: true, ..gpu_device("Apple M2 Max / Metal", None) }));
    assert!(!apple::on_metal(&gpu_device("NVIDIA A100 / Vulkan", None)));
    assert!(!apple::on_metal(&ComputeDevice { name: "Apple M2 Max / Metal".into(), ..ComputeDevice::cpu() }));
    // IOReport exists only on macOS: elsewhere a Metal-named adapter still has no sensor.
    if !cfg!(target_os = "macos") {
        assert!(apple_gpu_sensor(&metal).is_none());
    }
}

fn smollm2_plan() -> RunPlan {
    let path = common::fixture("paper-configs/smollm2-135m.json");
    let config = LlamaConfig::from_json_str(&fs::read_to_string(&path).unwrap(), "smollm2-135m.json").unwrap();
    let p = profile(&llama_ops(&config), BatchShape { batch: 4, seq: 512, decoder_seq: None, head_tokens: None, grad_tokens: None }, false)
        .unwrap();
    RunPlan { micro_steps: 1000, selections: 3, full_step_macs: p.t_full(), forward_macs: p.t_fp() }
}

#[test]
fn budget_rho_is_monotone_and_fits_on_smollm2() {
    let plan = smollm2_plan();
    let min = plan.flops(plan.min_rho());
    let max = plan.flops(1.0);
    assert!(plan.min_rho() > 0.2 && plan.min_rho() < 0.5, "forward share {}", plan.min_rho());
    let mut previous = 0.0;
    for i in 0..=50 {
        let budget = min + (max - min) * i as f64 / 50.0;
        let rho = plan.rho_for(budget).unwrap();
        assert!(rho >= previous, "rho fell from {previous} to {rho} at budget {budget:e}");
        assert!(plan.flops(rho) <= budget * (1.0 + 1e-12), "{rho} overspends {budget:e}");
        assert!(rho >= plan.min_rho() - 1e-12 && rho <= 1.0);
        previous = rho;
    }
    assert_eq!(plan.rho_for(10.0 * max).unwrap(), 1.0);
    assert!(plan.rho_for(0.99 * min).unwrap_err().contains("smallest feasible"));

    // Energy, CO2 and time budgets go through the stated assumptions.
    let eff = meter::CPU;
    let wh = plan.flops(0.5) / eff.flops_per_joule / 3600.0;
    let rho = plan.rho_for(Budget::EnergyWh(wh).to_flops(eff, 475.0)).unwrap();
    assert!((rho - 0.5).abs() < 1e-9);
    let co2 = Budget::Co2G(wh * 475.0 / 1000.0).to_flops(eff, 475.0);
    assert!((plan.rho_for(co2).unwrap() - 0.5).abs() < 1e-9);
    assert!(Budget::TimeS(10.0).to_flops(eff, 475.0) == 10.0 * eff.flops_per_second);
}

#[test]
fn budget_and_intensity_parse_from_flags_and_toml() {
    assert_eq!("2.5wh".parse::<Budget>().unwrap(), Budget::EnergyWh(2.5));
    assert_eq!("30 g".parse::<Budget>().unwrap(), Budget::Co2G(30.0));
    assert_eq!("600s".parse::<Budget>().unwrap(), Budget::TimeS(600.0));
    assert_eq!("1e15FLOPs".parse::<Budget>().unwrap(), Budget::Flops(1e15));
    assert!("-3wh".parse::<Budget>().is_err() && "5 joules".parse::<Budget>().is_err() && "wh".parse::<Budget>().is_err());
    assert_eq!(parse_intensity("France").unwrap(), 55.0);
    assert_eq!(parse_intensity("123.5").unwrap(), 123.5);
    assert!(parse_intensity("mars").is_err() && parse_intensity("-1").is_err());
    let c: TrainConfig = toml::from_str("grid_g_per_kwh = 250.0\nbudget = { co2_g = 12.0 }\n").unwrap();
    assert_eq!((c.grid_g_per_kwh, c.budget), (250.0, Some(Budget::Co2G(12.0))));
    assert_eq!(TrainConfig::default().grid_g_per_kwh, 475.0);
}

#[test]
fn run_card_round_trips() {
    let card = RunCard {
        model: "m".into(),
        data: "d.jsonl".into(),
        method: "GreenTrainer (rho 0.5)".into(),
        rho: Some(0.5),
        selection_size: 12,
        steps: 4,
        flops_spent: 1.5e12,
        flops_full: 3e12,
        final_loss: Some(2.25),
        footprint: Footprint {
            wall_time_s: 3.5,
            energy_wh: 0.01,
            energy_source: EnergySource::Estimated { flops_per_joule: 5e9, device_class: "CPU".into() },
            co2_g: 0.00475,
            grid_g_per_kwh: 475.0,
            budget: Some(greentrainer::green::budget::BudgetReport { budget: Budget::Flops(2e12), rho: 0.5, realised: 1.5e12 }),
        },
        rouge: Vec::new(),
    };
    let json = serde_json::to_string(&card).unwrap();
    assert_eq!(serde_json::from_str::<RunCard>(&json).unwrap(), card);
    let dir = tempfile::tempdir().unwrap();
    card.write(dir.path()).unwrap();
    let back: RunCard = serde_json::from_str(&fs::read_to_string(dir.path().join("run_card.json")).unwrap()).unwrap();
    assert_eq!(back, card);
    let md = fs::read_to_string(dir.path().join("run_card.md")).unwrap();
    assert!(md.contains("estimated") && md.contains("475 g/kWh") && md.contains("rho"), "{md}");

    // Evaluating the saved model adds its ROUGE; a second evaluation of the same file replaces it.
    let rouge = |r1| CorpusRouge { rouge1: r1, rouge2: 0.1, rouge_l: 0.2, rouge_lsum: 0.25, count: 50 };
    assert!(RunCard::record_rouge(dir.path(), "test.jsonl", rouge(0.3)).unwrap());
    assert!(RunCard::record_rouge(dir.path(), "test.jsonl", rouge(0.35)).unwrap());
    let back = RunCard::read(dir.path()).unwrap().unwrap();
    assert_eq!(back.rouge.len(), 1);
    assert_eq!(back.rouge[0].rouge, rouge(0.35));
    let md = fs::read_to_string(dir.path().join("run_card.md")).unwrap();
    assert!(md.contains("35.00 / 10.00 / 20.00 / 25.00 on test.jsonl (50 rows)"), "{md}");
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(!RunCard::record_rouge(elsewhere.path(), "test.jsonl", rouge(0.3)).unwrap(), "no card, nothing written");
}

#[test]
fn budgeted_run_reports_energy_and_writes_the_card() {
    let out = tempfile::tempdir().unwrap();
    let mut config = TrainConfig {
        model: common::fixture("tiny-llama"),
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl"),
        output: out.path().to_path_buf(),
        method: MethodKind::Greentrainer,
        epochs: 0,
        max_steps: 3,
        batch_size: 2,
        max_len: 48,
        save_model: true,
        grid_g_per_kwh: 55.0,
        ..TrainConfig::default()
    };
    let probe = Trainer::prepare(config.clone(), ComputeDevice::cpu()).unwrap();
    let plan = greentrainer::train::plan::run_plan(&probe).unwrap();
    let budget = plan.flops(0.7);
    config.budget = Some(Budget::Flops(budget));
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    assert!((trainer.config.rho - 0.7).abs() < 1e-9, "rho {}", trainer.config.rho);
    let mut events = Vec::new();
    trainer.run(&mut |e: &Event| events.push(e.clone()), &RunControl::default(), false).unwrap();
    let n = events.len();
    let (Event::Energy(f), Event::Finished { flops_spent, .. }) = (&events[n - 2], &events[n - 1]) else {
        panic!("expected energy then finished, got {:?}", &events[n - 2..]);
    };
    let report = f.budget.clone().unwrap();
    assert_eq!(report.realised, *flops_spent);
    assert!(*flops_spent <= budget, "{flops_spent:e} > {budget:e}");
    assert!(f.energy_wh > 0.0 && f.grid_g_per_kwh == 55.0 && (f.co2_g - f.energy_wh * 0.055).abs() < 1e-12);
    let card: RunCard = serde_json::from_str(&fs::read_to_string(out.path().join("model/run_card.json")).unwrap()).unwrap();
    // serde_json's default float parsing may differ in the last bit, hence the tolerances.
    assert_eq!((&card.footprint.energy_source, card.steps), (&f.energy_source, 3));
    assert!((card.footprint.co2_g - f.co2_g).abs() < 1e-15 && (card.rho.unwrap() - trainer.config.rho).abs() < 1e-12);
    assert!(card.selection_size > 0 && out.path().join("model/run_card.md").exists());
    // LoRA's row has adapters even when the run is not LoRA (its default targets).
    let report = greentrainer::train::plan::dry_run_report(&trainer).unwrap();
    assert!(report.contains("LoRA r 8 on q_proj,v_proj"), "{report}");
}

#[test]
fn nvml_gives_the_run_gpus_memory_when_it_identifies_that_gpu() {
    use greentrainer::green::meter::nvml_gpu_memory;
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml(dir.path(), 0);
    write(dir.path(), "gpus", "80 0 250000 NVIDIA H100\n24 0 70000 NVIDIA L4\n");
    assert_eq!(nvml_gpu_memory(Some(&lib), &gpu_device("NVIDIA L4 / Vulkan", Some("0000:18:00.0"))), Some(24 << 30));
    assert_eq!(nvml_gpu_memory(Some(&lib), &gpu_device("NVIDIA H100 / Vulkan", None)), Some(80 << 30));
    // Not identified (no such name, no address): two GPUs could be the one, so no answer.
    assert_eq!(nvml_gpu_memory(Some(&lib), &gpu_device("llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan", None)), None);
    assert_eq!(nvml_gpu_memory(Some(&fake_nvml(dir.path(), 9)), &gpu_device("NVIDIA L4 / Vulkan", None)), None, "no driver");
}
