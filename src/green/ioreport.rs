//! IOReport's "Energy Model" channels on macOS, read without root through the private
//! libIOReport. It is loaded at run time, so a Mac without it (or with a changed API) only loses
//! the Apple GPU reader. Compiled for macOS in this project but not run on a Mac in its CI.

use std::ffi::c_void;
use std::ptr;

use core_foundation::array::{CFArrayGetCount, CFArrayGetValueAtIndex, CFArrayRef};
use core_foundation::base::{CFType, CFTypeRef, TCFType, TCFTypeRef};
use core_foundation::dictionary::{CFDictionary, CFDictionaryGetValue, CFDictionaryRef, CFMutableDictionary, CFMutableDictionaryRef};
use core_foundation::string::{CFString, CFStringRef};
use libloading::Library;

use super::apple::{Channel, ENERGY_GROUP};

const LIBRARY: &str = "/usr/lib/libIOReport.dylib";

type CopyChannelsInGroup = unsafe extern "C" fn(CFStringRef, CFStringRef, u64, u64, u64) -> CFMutableDictionaryRef;
type CreateSubscription =
    unsafe extern "C" fn(*const c_void, CFMutableDictionaryRef, *mut CFMutableDictionaryRef, u64, CFTypeRef) -> CFTypeRef;
type CreateSamples = unsafe extern "C" fn(CFTypeRef, CFMutableDictionaryRef, CFTypeRef) -> CFDictionaryRef;
type CreateSamplesDelta = unsafe extern "C" fn(CFDictionaryRef, CFDictionaryRef, CFTypeRef) -> CFDictionaryRef;
type ChannelString = unsafe extern "C" fn(CFDictionaryRef) -> CFStringRef;
type SimpleGetIntegerValue = unsafe extern "C" fn(CFDictionaryRef, i32) -> i64;

/// The libIOReport functions used here.
struct Api {
    create_samples: CreateSamples,
    create_samples_delta: CreateSamplesDelta,
    group: ChannelString,
    name: ChannelString,
    unit: ChannelString,
    integer_value: SimpleGetIntegerValue,
}

/// A subscription to the energy channels and the last sample taken from it.
pub(super) struct Reader {
    api: Api,
    subscription: CFType,
    subscribed: CFMutableDictionary,
    last: CFDictionary,
    /// Declared last so it is unloaded after the objects it made are released.
    _library: Library,
}

// SAFETY: the Reader owns its CoreFoundation objects (retain/release are thread-safe) and is only
// used through `&mut self`, so moving it to another thread never shares them.
unsafe impl Send for Reader {}

/// Wraps an owned (+1) reference, None when the call failed.
fn owned<T: TCFType>(reference: T::Ref) -> Option<T> {
    // SAFETY: a non-null reference the caller owns.
    (!reference.as_void_ptr().is_null()).then(|| unsafe { T::wrap_under_create_rule(reference) })
}

fn string(reference: CFStringRef) -> String {
    if reference.is_null() {
        return String::new();
    }
    // SAFETY: a non-null string owned by the channel (get rule: retained while wrapped).
    unsafe { CFString::wrap_under_get_rule(reference) }.to_string()
}

impl Reader {
    /// Subscribes to the energy channels; None (logged) when libIOReport or the channels are missing.
    pub(super) fn open() -> Option<Self> {
        let opened = Self::try_open();
        if let Err(e) = &opened {
            tracing::debug!("IOReport not available, the Apple GPU is not measured: {e}");
        }
        opened.ok()
    }

    fn try_open() -> Result<Self, String> {
        // SAFETY: libIOReport runs no initialisers with preconditions; its symbols are typed as
        // the public tools that use this private API call them.
        let library = unsafe { Library::new(LIBRARY) }.map_err(|e| e.to_string())?;
        let symbol = |name: &str| format!("{LIBRARY} lacks {name}");
        // SAFETY (each `get`): the function types above match the symbols' C signatures.
        let (copy_channels, create_subscription, api) = unsafe {
            let copy: CopyChannelsInGroup =
                *library.get(b"IOReportCopyChannelsInGroup\0").map_err(|_| symbol("IOReportCopyChannelsInGroup"))?;
            let subscribe: CreateSubscription =
                *library.get(b"IOReportCreateSubscription\0").map_err(|_| symbol("IOReportCreateSubscription"))?;
            let api = Api {
                create_samples: *library.get(b"IOReportCreateSamples\0").map_err(|_| symbol("IOReportCreateSamples"))?,
                create_samples_delta: *library.get(b"IOReportCreateSamplesDelta\0").map_err(|_| symbol("IOReportCreateSamplesDelta"))?,
                group: *library.get(b"IOReportChannelGetGroup\0").map_err(|_| symbol("IOReportChannelGetGroup"))?,
                name: *library.get(b"IOReportChannelGetChannelName\0").map_err(|_| symbol("IOReportChannelGetChannelName"))?,
                unit: *library.get(b"IOReportChannelGetUnitLabel\0").map_err(|_| symbol("IOReportChannelGetUnitLabel"))?,
                integer_value: *library.get(b"IOReportSimpleGetIntegerValue\0").map_err(|_| symbol("IOReportSimpleGetIntegerValue"))?,
            };
            (copy, subscribe, api)
        };
        let group = CFString::new(ENERGY_GROUP);
        // SAFETY: a valid group name, no subgroup; "Copy" returns an owned dictionary.
        let channels: CFMutableDictionary = owned(unsafe { copy_channels(group.as_concrete_TypeRef(), ptr::null(), 0, 0, 0) })
            .ok_or(format!("no \"{ENERGY_GROUP}\" channels"))?;
        let mut subscribed: CFMutableDictionaryRef = ptr::null_mut();
        // SAFETY: `channels` outlives the call; `subscribed` receives the channels subscribed to.
        let subscription: CFType =
            owned(unsafe { create_subscription(ptr::null(), channels.as_concrete_TypeRef(), &mut subscribed, 0, ptr::null()) })
                .ok_or("the subscription was refused")?;
        if subscribed.is_null() {
            return Err("the subscription has no channels".into());
        }
        // Retained here rather than taken over: whether the caller owns it is undocumented, and
        // an extra reference leaks one dictionary per run where a missing one would crash.
        // SAFETY: non-null, valid while the subscription lives.
        let subscribed = unsafe { CFMutableDictionary::wrap_under_get_rule(subscribed) };
        // SAFETY: a live subscription and its channels; "Create" returns an owned sample.
        let last = owned(unsafe { (api.create_samples)(subscription.as_CFTypeRef(), subscribed.as_concrete_TypeRef(), ptr::null()) })
            .ok_or("no first sample")?;
        Ok(Self { api, subscription, subscribed, last, _library: library })
    }

    /// The channels' energy since the previous call.
    pub(super) fn delta(&mut self) -> Option<Vec<Channel>> {
        let api = &self.api;
        // SAFETY: as in `try_open`; both samples are owned here and outlive the delta call.
        let now: CFDictionary =
            owned(unsafe { (api.create_samples)(self.subscription.as_CFTypeRef(), self.subscribed.as_concrete_TypeRef(), ptr::null()) })?;
        let delta: CFDictionary =
            owned(unsafe { (api.create_samples_delta)(self.last.as_concrete_TypeRef(), now.as_concrete_TypeRef(), ptr::null()) })?;
        self.last = now;
        let key = CFString::from_static_string("IOReportChannels");
        // SAFETY: `delta` is a live dictionary; the array (get rule) lives as long as it.
        let array = unsafe { CFDictionaryGetValue(delta.as_concrete_TypeRef(), key.as_CFTypeRef()) } as CFArrayRef;
        if array.is_null() {
            return None;
        }
        // SAFETY: `array` is a CFArray of channel dictionaries, indexed within its count.
        let count = unsafe { CFArrayGetCount(array) };
        let channels = (0..count)
            .map(|i| unsafe {
                let channel = CFArrayGetValueAtIndex(array, i) as CFDictionaryRef;
                Channel {
                    group: string((api.group)(channel)),
                    name: string((api.name)(channel)),
                    unit: string((api.unit)(channel)),
                    value: (api.integer_value)(channel, 0),
                }
            })
            .collect();
        Some(channels)
    }
}
