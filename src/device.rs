//! Choosing where tensors live: wgpu (Vulkan, Metal, DX12) for the product, flex on the CPU as
//! the fallback. Everything else in the engine takes a `burn::tensor::Device` and runs on either.

use std::sync::OnceLock;

use burn::tensor::Device;

/// What the user asked for (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Wgpu,
    Cpu,
}

impl DeviceChoice {
    pub const ALL: [Self; 2] = [Self::Wgpu, Self::Cpu];
}

/// The backend actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Wgpu,
    Cpu,
}

#[derive(Clone, Debug)]
pub struct ComputeDevice {
    pub device: Device,
    pub backend: BackendKind,
    /// Adapter name and API, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan", or "CPU (flex)".
    pub name: String,
    /// True when the adapter is a software rasteriser such as lavapipe (correct but slow).
    pub software: bool,
    /// The adapter's PCI address (`0000:01:00.0`), when the backend reports it.
    pub pci_bus_id: Option<String>,
    /// Largest single buffer the adapter can bind, when known (tensors above it cannot be used).
    pub max_buffer_binding: Option<u64>,
    /// Set when the choice fell back to the CPU, saying why.
    pub fallback_reason: Option<String>,
}

impl ComputeDevice {
    pub fn cpu() -> Self {
        Self {
            device: Device::flex(),
            backend: BackendKind::Cpu,
            name: "CPU (flex)".into(),
            software: false,
            pci_bus_id: None,
            max_buffer_binding: None,
            fallback_reason: None,
        }
    }

    /// Opens the chosen backend; wgpu falls back to the CPU with the reason recorded.
    pub fn open(choice: DeviceChoice) -> Self {
        match choice {
            DeviceChoice::Cpu => Self::cpu(),
            DeviceChoice::Wgpu => match wgpu() {
                Ok(dev) => dev.clone(),
                Err(reason) => {
                    Self { fallback_reason: Some(format!("no usable GPU adapter ({reason}); running on the CPU")), ..Self::cpu() }
                }
            },
        }
    }
}

/// The largest buffer `device` binds at once when it is the wgpu adapter this process opened; None
/// for the CPU, which has no such limit.
pub fn binding_limit(device: &Device) -> Option<u64> {
    if !crate::kernels::runs_wgsl(device) {
        return None;
    }
    wgpu().ok().and_then(|d| d.max_buffer_binding)
}

/// The wgpu runtime can be initialised once per process, so the result is kept.
fn wgpu() -> Result<&'static ComputeDevice, String> {
    static WGPU: OnceLock<Result<ComputeDevice, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        let init = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        let (device, setup) = match init {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the wgpu runtime panicked while starting".into()),
        };
        let info = setup.adapter.get_info();
        let limits = setup.adapter.limits();
        Ok(ComputeDevice {
            device,
            backend: BackendKind::Wgpu,
            name: format!("{} / {:?}", info.name, info.backend),
            software: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
            pci_bus_id: Some(info.device_pci_bus_id.clone()).filter(|id| !id.is_empty()),
            max_buffer_binding: Some(limits.max_storage_buffer_binding_size),
            fallback_reason: None,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}
