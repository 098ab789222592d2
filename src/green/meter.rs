//! A run's energy: measured where the platform exposes it (Linux sysfs, NVIDIA's NVML, Apple's
//! IOReport), otherwise estimated from the FLOPs spent and a stated device efficiency.
//!
//! Measured figures are whole-device (other processes and idle power included): RAPL counts the
//! CPU packages, amdgpu hwmon and NVML the whole board, IOReport the Apple GPU (not the CPU, SRAM
//! or memory on the same chip). NVML and libIOReport are loaded at run time, so a
//! machine without them only loses that reader. The IOReport reader is compiled for macOS but not
//! run on a Mac in this project's CI: its channel choice, units and sums are tested on every
//! platform with channel lists written for the tests, the calls into libIOReport are not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{apple, nvml};
use crate::device::{BackendKind, ComputeDevice};

/// Stated assumptions for estimates where nothing is measured. Rough orders of magnitude for
/// fp32 training through this engine, not benchmarks of any particular chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Efficiency {
    pub flops_per_joule: f64,
    pub flops_per_second: f64,
    pub label: &'static str,
}

/// A multi-core CPU: ~5 GFLOP/J at ~100 GFLOP/s (~20 W of compute).
pub const CPU: Efficiency = Efficiency { flops_per_joule: 5e9, flops_per_second: 1e11, label: "CPU" };
/// A discrete GPU: ~50 GFLOP/J at ~5 TFLOP/s (~100 W).
pub const GPU: Efficiency = Efficiency { flops_per_joule: 5e10, flops_per_second: 5e12, label: "GPU" };

impl Efficiency {
    /// A software adapter (lavapipe) computes on the CPU.
    pub fn for_device(device: &ComputeDevice) -> Self {
        if on_gpu(device) { GPU } else { CPU }
    }

    pub fn joules(&self, flops: f64) -> f64 {
        flops / self.flops_per_joule
    }

    pub fn seconds(&self, flops: f64) -> f64 {
        flops / self.flops_per_second
    }
}

fn on_gpu(device: &ComputeDevice) -> bool {
    device.backend == BackendKind::Wgpu && !device.software
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnergySource {
    /// Read from these sensors over the run.
    Measured { sensors: Vec<String> },
    /// FLOPs divided by an assumed efficiency.
    Estimated { flops_per_joule: f64, device_class: String },
}

impl fmt::Display for EnergySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Measured { sensors } => write!(f, "measured ({})", sensors.join(", ")),
            Self::Estimated { flops_per_joule, device_class } => {
                write!(f, "estimated (FLOPs / {flops_per_joule:.0e} FLOP/J, assumed for a {device_class})")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Energy {
    pub joules: f64,
    pub source: EnergySource,
}

impl Energy {
    pub fn estimated(flops: f64, efficiency: Efficiency) -> Self {
        Self {
            joules: efficiency.joules(flops),
            source: EnergySource::Estimated { flops_per_joule: efficiency.flops_per_joule, device_class: efficiency.label.into() },
        }
    }

    pub fn wh(&self) -> f64 {
        self.joules / 3600.0
    }
}

#[derive(Debug, Clone, Copy)]
enum Reading {
    /// A cumulative microjoule counter; RAPL counters wrap at `max_energy_range_uj`.
    Counter { wrap_uj: Option<u64> },
    /// Average power in microwatts, integrated between samples.
    Power,
}

/// One energy reader, named for the run card.
#[derive(Debug)]
pub struct Sensor {
    name: String,
    probe: Probe,
}

#[derive(Debug)]
enum Probe {
    /// A sysfs file, with its previous value.
    File {
        path: PathBuf,
        reading: Reading,
        last: u64,
    },
    Nvml(nvml::Probe),
    Apple(apple::Probe),
}

impl Sensor {
    /// None when the file cannot be read as a number (RAPL is root-only on recent kernels).
    fn open(name: String, path: PathBuf, reading: Reading) -> Option<Self> {
        let last = read_u64(&path)?;
        Some(Self { name, probe: Probe::File { path, reading, last } })
    }

    /// Joules since the previous sample, `dt_s` seconds ago; None when the value is unreadable or
    /// a counter went backwards without a known wrap range.
    fn sample(&mut self, dt_s: f64) -> Option<f64> {
        match &mut self.probe {
            Probe::Nvml(gpu) => gpu.sample(),
            Probe::Apple(gpu) => gpu.sample(),
            Probe::File { path, reading, last } => {
                let now = read_u64(path)?;
                let joules = match *reading {
                    Reading::Counter { wrap_uj } => {
                        let delta = if now >= *last { now - *last } else { wrap_uj?.checked_sub(*last)? + now };
                        delta as f64 * 1e-6
                    }
                    Reading::Power => (*last + now) as f64 / 2.0 * 1e-6 * dt_s,
                };
                *last = now;
                Some(joules)
            }
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_name(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("name")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Subdirectories of `dir` whose names satisfy `keep`, sorted.
fn subdirs(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            keep(&name).then(|| (name, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// RAPL package zones under `root` ("/" in production). Subzones (`intel-rapl:0:0`) are parts of
/// their package and `psys` overlaps the packages, so both are skipped to avoid double counting.
pub fn rapl_sensors(root: &Path) -> Vec<Sensor> {
    subdirs(&root.join("sys/class/powercap"), |n| numbered(n, "intel-rapl:"))
        .into_iter()
        .filter_map(|(dir_name, dir)| {
            let zone = read_name(&dir);
            if zone == "psys" {
                return None;
            }
            let wrap_uj = read_u64(&dir.join("max_energy_range_uj"));
            Sensor::open(format!("RAPL {dir_name} {zone}"), dir.join("energy_uj"), Reading::Counter { wrap_uj })
        })
        .collect()
}

/// amdgpu boards under `root`: the energy counter where the driver has one, else average power.
pub fn amdgpu_sensors(root: &Path) -> Vec<Sensor> {
    let mut out = Vec::new();
    for (card, dir) in subdirs(&root.join("sys/class/drm"), |n| numbered(n, "card")) {
        for (hwmon, hdir) in subdirs(&dir.join("device/hwmon"), |n| numbered(n, "hwmon")) {
            if read_name(&hdir) != "amdgpu" {
                continue;
            }
            let name = |file: &str| format!("amdgpu {card}/{hwmon}/{file}");
            let sensor = Sensor::open(name("energy1_input"), hdir.join("energy1_input"), Reading::Counter { wrap_uj: None })
                .or_else(|| Sensor::open(name("power1_average"), hdir.join("power1_average"), Reading::Power))
                .or_else(|| Sensor::open(name("power1_input"), hdir.join("power1_input"), Reading::Power));
            out.extend(sensor);
        }
    }
    out
}

/// NVIDIA GPUs for a run on `device` (the one it runs on when the adapter's PCI address or name
/// identifies it, else every GPU, labelled so). `lib` overrides the system's libnvidia-ml; without
/// a loadable library or driver there are none.
pub fn nvml_sensors(lib: Option<&Path>, device: &ComputeDevice) -> Vec<Sensor> {
    nvml::probes(lib, device).into_iter().map(|(name, gpu)| Sensor { name, probe: Probe::Nvml(gpu) }).collect()
}

/// Total memory of the NVIDIA GPU `device` runs on, through NVML (`lib` overrides the system's
/// libnvidia-ml); None unless NVML identifies exactly that GPU.
pub fn nvml_gpu_memory(lib: Option<&Path>, device: &ComputeDevice) -> Option<u64> {
    nvml::gpu_memory(lib, device)
}

/// Apple's GPU from the IOReport energy deltas `read` returns (the system's: [`apple_gpu_sensor`]);
/// None when the first holds no GPU channel in a known unit.
pub fn ioreport_sensor(read: apple::Deltas) -> Option<Sensor> {
    apple::Probe::open(read).map(|(name, gpu)| Sensor { name, probe: Probe::Apple(gpu) })
}

/// Apple Silicon's GPU for a run on its Metal adapter; None elsewhere (not macOS, a software
/// adapter, or no readable libIOReport).
pub fn apple_gpu_sensor(device: &ComputeDevice) -> Option<Sensor> {
    if !apple::on_metal(device) {
        return None;
    }
    apple::system().and_then(ioreport_sensor)
}

/// Accumulates the sensors' energy; call [`Meter::sample`] now and then (each training step) so
/// power readings are integrated and counters cannot wrap twice unseen.
pub struct Meter {
    sensors: Vec<Sensor>,
    last: Instant,
    joules: f64,
    failed: bool,
}

impl Meter {
    /// The sensors for a run on `device`: RAPL for the CPU; for a GPU, amdgpu boards, NVIDIA GPUs
    /// and Apple's GPU plus RAPL for the host, or nothing (estimated) when the GPU itself cannot be
    /// read. `root` is the sysfs root ("/"), `nvml_lib` a libnvidia-ml other than the system's.
    pub fn open(root: &Path, nvml_lib: Option<&Path>, device: &ComputeDevice) -> Self {
        let sensors = if on_gpu(device) {
            let mut sensors = amdgpu_sensors(root);
            sensors.extend(nvml_sensors(nvml_lib, device));
            sensors.extend(apple_gpu_sensor(device));
            if !sensors.is_empty() {
                sensors.extend(rapl_sensors(root));
            }
            sensors
        } else {
            rapl_sensors(root)
        };
        Self::from_sensors(sensors)
    }

    pub fn from_sensors(sensors: Vec<Sensor>) -> Self {
        Self { sensors, last: Instant::now(), joules: 0.0, failed: false }
    }

    pub fn sample(&mut self) {
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        for s in &mut self.sensors {
            match s.sample(dt) {
                Some(j) => self.joules += j,
                None => self.failed = true,
            }
        }
    }

    /// Joules so far, when every sensor read cleanly.
    pub fn measured_joules(&self) -> Option<f64> {
        (!self.sensors.is_empty() && !self.failed).then_some(self.joules)
    }

    /// The run's energy: measured, or estimated from `flops` when nothing (or nothing reliable) was read.
    pub fn finish(mut self, flops: f64, efficiency: Efficiency) -> Energy {
        self.sample();
        match self.measured_joules() {
            Some(joules) => {
                Energy { joules, source: EnergySource::Measured { sensors: self.sensors.into_iter().map(|s| s.name).collect() } }
            }
            None => Energy::estimated(flops, efficiency),
        }
    }
}
