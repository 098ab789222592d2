//! NVIDIA GPUs through NVML, loaded at run time so a machine without the driver only loses this
//! reader: the total energy counter (Volta and later) where the GPU has one, else board power
//! sampled on a thread and integrated.

use std::fmt;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;

use crate::device::ComputeDevice;

/// How often a GPU without an energy counter has its power read.
const POWER_INTERVAL: Duration = Duration::from_millis(100);

/// One GPU's energy since the previous sample.
pub(super) struct Probe {
    nvml: Arc<Nvml>,
    index: u32,
    reading: Reading,
}

enum Reading {
    /// Millijoules since the driver loaded, as last read.
    Counter {
        last_mj: u64,
    },
    Power(Sampler),
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if matches!(self.reading, Reading::Counter { .. }) { "energy counter" } else { "power" };
        write!(f, "NVML GPU {} ({kind})", self.index)
    }
}

impl Probe {
    /// Joules since the previous sample; None when a read failed or the counter went backwards
    /// (a driver reload resets it).
    pub(super) fn sample(&mut self) -> Option<f64> {
        match &mut self.reading {
            Reading::Counter { last_mj } => {
                let now = self.nvml.device_by_index(self.index).ok()?.total_energy_consumption().ok()?;
                let delta = now.checked_sub(*last_mj)?;
                *last_mj = now;
                Some(delta as f64 * 1e-3)
            }
            Reading::Power(sampler) => {
                // A reading now, so the integral ends here rather than at the thread's last tick.
                let mut integral = lock(&sampler.integral);
                integral.advance(power_mw(&self.nvml, self.index));
                (!integral.failed).then(|| std::mem::take(&mut integral.joules))
            }
        }
    }
}

/// Power integrated (trapezoid) by a thread reading it every [`POWER_INTERVAL`]; the thread
/// stops when this is dropped.
struct Sampler {
    integral: Arc<Mutex<Integral>>,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

struct Integral {
    last_mw: u32,
    at: Instant,
    joules: f64,
    failed: bool,
}

impl Integral {
    fn advance(&mut self, power_mw: Option<u32>) {
        let Some(mw) = power_mw else {
            self.failed = true;
            return;
        };
        let now = Instant::now();
        self.joules += (self.last_mw as f64 + mw as f64) / 2.0 * 1e-3 * (now - self.at).as_secs_f64();
        (self.last_mw, self.at) = (mw, now);
    }
}

impl Sampler {
    fn start(nvml: Arc<Nvml>, index: u32, first_mw: u32) -> Option<Self> {
        let integral = Arc::new(Mutex::new(Integral { last_mw: first_mw, at: Instant::now(), joules: 0.0, failed: false }));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = integral.clone();
        let thread = std::thread::Builder::new()
            .name("nvml-power".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POWER_INTERVAL) {
                    lock(&shared).advance(power_mw(&nvml, index));
                }
            })
            .inspect_err(|e| tracing::debug!("NVML power sampler not started: {e}"))
            .ok()?;
        Some(Self { integral, stop, thread: Some(thread) })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // The thread may already be gone; either way it is joined.
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The integral stays meaningful if a holder panicked: it is only ever added to.
fn lock(integral: &Mutex<Integral>) -> MutexGuard<'_, Integral> {
    integral.lock().unwrap_or_else(PoisonError::into_inner)
}

fn power_mw(nvml: &Nvml, index: u32) -> Option<u32> {
    nvml.device_by_index(index).ok()?.power_usage().ok()
}

struct Gpu {
    index: u32,
    name: String,
    pci: Option<Vec<u32>>,
}

/// `domain:bus:device.function` in hex, as NVML (`00000000:01:00.0`) and wgpu (`0000:01:00.0`)
/// write it with different widths.
fn pci_address(text: &str) -> Option<Vec<u32>> {
    text.split([':', '.']).map(|part| u32::from_str_radix(part, 16).ok()).collect()
}

/// The GPUs `device` runs on, and whether that is exactly one identified GPU: the one at the
/// adapter's PCI address when the adapter reports it (none there: the run is not on an NVIDIA
/// GPU), else those with the adapter's name, else all of them.
fn run_gpus<'a>(gpus: &'a [Gpu], device: &ComputeDevice) -> (Vec<&'a Gpu>, bool) {
    if let Some(address) = device.pci_bus_id.as_deref().and_then(pci_address) {
        return (gpus.iter().filter(|g| g.pci.as_ref() == Some(&address)).collect(), true);
    }
    let adapter = device.name.rsplit_once(" / ").map_or(device.name.as_str(), |(name, _api)| name);
    let named: Vec<&Gpu> = gpus.iter().filter(|g| g.name == adapter).collect();
    match named.len() {
        0 => (gpus.iter().collect(), false),
        n => (named, n == 1),
    }
}

/// Total memory of the NVIDIA GPU `device` runs on, when NVML identifies exactly that one GPU.
/// `lib` overrides the system's libnvidia-ml.
pub(super) fn gpu_memory(lib: Option<&Path>, device: &ComputeDevice) -> Option<u64> {
    let nvml = init(lib)?;
    let gpus = list(&nvml);
    let (chosen, identified) = run_gpus(&gpus, device);
    match (chosen.as_slice(), identified) {
        ([gpu], true) => nvml.device_by_index(gpu.index).ok()?.memory_info().ok().map(|m| m.total),
        _ => None,
    }
}

/// NVML, or None without a driver (or with `lib` unloadable).
fn init(lib: Option<&Path>) -> Option<Nvml> {
    let mut builder = Nvml::builder();
    if let Some(lib) = lib {
        builder.lib_path(lib.as_os_str());
    }
    builder.init().map_err(|e| tracing::debug!("NVML not available, NVIDIA GPUs are not read: {e}")).ok()
}

/// Every GPU NVML lists, with its name and PCI address.
fn list(nvml: &Nvml) -> Vec<Gpu> {
    (0..nvml.device_count().unwrap_or(0))
        .filter_map(|index| {
            let gpu = nvml.device_by_index(index).ok()?;
            let name = gpu.name().unwrap_or_else(|_| format!("GPU {index}"));
            Some(Gpu { index, name, pci: gpu.pci_info().ok().and_then(|p| pci_address(&p.bus_id)) })
        })
        .collect()
}

/// Readers for the NVIDIA GPUs of a run on `device`, named for the run card. `lib` overrides the
/// system's libnvidia-ml; when NVML cannot be loaded or started (no driver) there are none.
pub(super) fn probes(lib: Option<&Path>, device: &ComputeDevice) -> Vec<(String, Probe)> {
    let Some(nvml) = init(lib).map(Arc::new) else { return Vec::new() };
    let gpus = list(&nvml);
    let (chosen, identified) = run_gpus(&gpus, device);
    let read = chosen.len();
    chosen
        .into_iter()
        .filter_map(|gpu| {
            let label = |what: &str| {
                let unsure = format!(" (GPU {}, one of {read} read: the run's adapter is not identified)", gpu.index);
                format!("NVML {what}: {}{}", gpu.name, if identified { "" } else { &unsure })
            };
            let handle = nvml.device_by_index(gpu.index).ok()?;
            if let Ok(last_mj) = handle.total_energy_consumption() {
                let probe = Probe { nvml: nvml.clone(), index: gpu.index, reading: Reading::Counter { last_mj } };
                return Some((label("total energy"), probe));
            }
            let Ok(first_mw) = handle.power_usage() else {
                tracing::debug!("NVML reads neither energy nor power of {}", gpu.name);
                return None;
            };
            let sampler = Sampler::start(nvml.clone(), gpu.index, first_mw)?;
            Some((label("power x time"), Probe { nvml: nvml.clone(), index: gpu.index, reading: Reading::Power(sampler) }))
        })
        .collect()
}
