//! The host side of the proxy-wasm ABI 0.2.1: every `env.proxy_*` function a Rust SDK
//! 0.2.5 module imports, defined once on the host's `Linker`.
//!
//! Invariant: a guest's call never traps the host. Bad pointers answer
//! `InvalidMemoryAccess`, bad arguments `BadArgument`, unknown imports `Unimplemented`; only a
//! trap raised by the guest itself (in `proxy_on_memory_allocate`) propagates.

use crate::abi::{self, BufferType, LogLevel, MapType, MetricKind, Status};
use crate::state::{
    LocalResponse, PendingCallout, StoreState, header_add, header_get, header_remove,
    header_replace, normalize,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, ExternType, Linker, Module, Val, ValType};

type C<'a> = Caller<'a, StoreState>;

fn code(r: Result<(), Status>) -> i32 {
    match r {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    }
}

fn read(c: &C, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    mem.data(c)
        .get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

fn read_str(c: &C, ptr: i32, len: i32) -> Result<String, Status> {
    Ok(String::from_utf8_lossy(&read(c, ptr, len)?).into_owned())
}

fn write(c: &mut C, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let mem = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let ptr = ptr as u32 as usize;
    let end = ptr
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    mem.data_mut(c)
        .get_mut(ptr..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

fn check(c: &C, ptr: i32, len: usize) -> Result<(), Status> {
    let mem = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let end = (ptr as u32 as usize)
        .checked_add(len)
        .ok_or(Status::InvalidMemoryAccess)?;
    if end > mem.data_size(c) {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(())
}

fn write_u32(c: &mut C, ptr: i32, v: u32) -> Result<(), Status> {
    write(c, ptr, &v.to_le_bytes())
}

/// Hands `data` to the guest: memory from its `proxy_on_memory_allocate`, then the pointer
/// and size written where it asked. Empty data is returned as a null pointer, as Envoy does.
fn give(c: &mut C, data: &[u8], ptr_ptr: i32, size_ptr: i32) -> wasmtime::Result<i32> {
    if let Err(s) = check(c, ptr_ptr, 4).and_then(|()| check(c, size_ptr, 4)) {
        return Ok(s.code());
    }
    if data.is_empty() {
        return Ok(code(
            write_u32(c, ptr_ptr, 0).and_then(|()| write_u32(c, size_ptr, 0)),
        ));
    }
    let Some(alloc) = c.data().alloc.clone() else {
        return Ok(Status::InternalFailure.code());
    };
    let Ok(len) = i32::try_from(data.len()) else {
        return Ok(Status::InternalFailure.code());
    };
    let ptr = alloc.call(&mut *c, len)?;
    if ptr == 0 {
        return Ok(Status::InternalFailure.code());
    }
    Ok(code(write(c, ptr, data).and_then(|()| {
        write_u32(c, ptr_ptr, ptr as u32)?;
        write_u32(c, size_ptr, len as u32)
    })))
}

/// [`give`] of what `fill` writes into the store's reusable [`StoreState::scratch`] buffer
/// (no allocation per call once it has grown). `fill` answers a status instead of data when
/// there is nothing to give; it gets the caller, so it can read guest memory too.
fn give_scratch(
    c: &mut C,
    ptr_ptr: i32,
    size_ptr: i32,
    fill: impl FnOnce(&mut C, &mut Vec<u8>) -> Result<(), Status>,
) -> wasmtime::Result<i32> {
    let mut scratch = std::mem::take(&mut c.data_mut().scratch);
    scratch.clear();
    let given = match fill(c, &mut scratch) {
        Ok(()) => give(c, &scratch, ptr_ptr, size_ptr),
        Err(s) => Ok(s.code()),
    };
    c.data_mut().scratch = scratch;
    given
}

fn map_ref(s: &mut StoreState, raw: i32) -> Result<&mut abi::Headers, Status> {
    let ty = MapType::from_raw(raw).ok_or(Status::BadArgument)?;
    match ty {
        MapType::CallResponseHeaders => Ok(&mut s.call_response.get_or_insert_default().headers),
        MapType::CallResponseTrailers => Ok(&mut s.call_response.get_or_insert_default().trailers),
        _ => {
            let stream = s.stream().ok_or(Status::NotFound)?;
            Ok(match ty {
                MapType::RequestHeaders => &mut stream.request.headers,
                MapType::RequestTrailers => &mut stream.request.trailers,
                MapType::ResponseHeaders => &mut stream.response.headers,
                _ => &mut stream.response.trailers,
            })
        }
    }
}

fn buffer_ref(s: &mut StoreState, raw: i32) -> Result<&mut Vec<u8>, Status> {
    match BufferType::from_raw(raw).ok_or(Status::BadArgument)? {
        BufferType::RequestBody => Ok(&mut s.stream().ok_or(Status::NotFound)?.request.body),
        BufferType::ResponseBody => Ok(&mut s.stream().ok_or(Status::NotFound)?.response.body),
        BufferType::CallResponseBody => {
            Ok(&mut s.call_response.as_mut().ok_or(Status::NotFound)?.body)
        }
        _ => Err(Status::BadArgument),
    }
}

/// Counts one call of the import `name` in this VM's [`crate::vm::Vm::host_calls`].
fn count(c: &mut C, name: &'static str) {
    c.data_mut().host_calls.count(name);
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Defines every supported import on `linker`.
pub(crate) fn define(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    const ENV: &str = "env";

    linker.func_wrap(
        ENV,
        "proxy_log",
        |mut c: C, level: i32, ptr: i32, len: i32| -> i32 {
            count(&mut c, "proxy_log");
            match read_str(&c, ptr, len) {
                Ok(message) => {
                    c.data_mut().log(LogLevel::from_raw(level), message);
                    Status::Ok.code()
                }
                Err(s) => s.code(),
            }
        },
    )?;
    linker.func_wrap(ENV, "proxy_get_log_level", |mut c: C, ret: i32| -> i32 {
        count(&mut c, "proxy_get_log_level");
        code(write_u32(&mut c, ret, 0))
    })?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: C, ret: i32| -> i32 {
            count(&mut c, "proxy_get_current_time_nanoseconds");
            let now = c.data().host.clock_nanos.unwrap_or_else(now_nanos);
            code(write(&mut c, ret, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: C, ms: i32| -> i32 {
            count(&mut c, "proxy_set_tick_period_milliseconds");
            let ms = ms as u32;
            c.data_mut().tick_period = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(ENV, "proxy_done", |mut c: C| -> i32 {
        count(&mut c, "proxy_done");
        Status::Ok.code()
    })?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |mut c: C, ctx: i32| -> i32 {
            count(&mut c, "proxy_set_effective_context");
            let ctx = ctx as u32;
            let s = c.data_mut();
            if ctx == s.root_context || s.streams.contains_key(&ctx) {
                s.active = ctx;
                Status::Ok.code()
            } else {
                Status::BadArgument.code()
            }
        },
    )?;

    define_buffers(linker)?;
    define_maps(linker)?;
    define_properties(linker)?;
    define_shared(linker)?;
    define_metrics(linker)?;
    define_streams(linker)?;
    define_unsupported(linker)?;
    Ok(())
}

/// Calls this host does not serve, answered with the status the SDK turns into an `Err`
/// (rather than `Unimplemented`, on which it panics): as Envoy answers for an unknown
/// foreign function or gRPC cluster.
fn define_unsupported(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C, _np: i32, _nl: i32, _ap: i32, _al: i32, _rp: i32, _rl: i32| -> i32 {
            count(&mut c, "proxy_call_foreign_function");
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> i32 {
            count(&mut c, "proxy_grpc_call");
            Status::InternalFailure.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
            count(&mut c, "proxy_grpc_stream");
            Status::InternalFailure.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C, _: i32, _: i32, _: i32, _: i32| -> i32 {
            count(&mut c, "proxy_grpc_send");
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: C, _: i32| -> i32 {
        count(&mut c, "proxy_grpc_cancel");
        Status::NotFound.code()
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |mut c: C, _: i32| -> i32 {
        count(&mut c, "proxy_grpc_close");
        Status::NotFound.code()
    })?;
    Ok(())
}

fn define_buffers(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C, ty: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| {
            count(&mut c, "proxy_get_buffer_bytes");
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            let range = |len: usize| {
                let start = start.min(len);
                start..start.saturating_add(max).min(len)
            };
            let kind = BufferType::from_raw(ty);
            if let Some(BufferType::VmConfiguration | BufferType::PluginConfiguration) = kind {
                let host = c.data().host.clone();
                let source: &[u8] = match kind {
                    Some(BufferType::VmConfiguration) => &host.vm_config,
                    _ => &host.plugin_config,
                };
                return give(&mut c, &source[range(source.len())], ptr_ptr, size_ptr);
            }
            // The buffer is lent to `give` rather than copied (a body can be a megabyte
            // read once per chunk); the guest's allocator it calls never reads buffers.
            let source = match buffer_ref(c.data_mut(), ty) {
                Ok(b) => std::mem::take(b),
                Err(e) => return Ok(e.code()),
            };
            let given = give(&mut c, &source[range(source.len())], ptr_ptr, size_ptr);
            if let Ok(b) = buffer_ref(c.data_mut(), ty) {
                *b = source;
            }
            given
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C, ty: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            count(&mut c, "proxy_set_buffer_bytes");
            let Some(mem) = c.data().memory else {
                return Status::InvalidMemoryAccess.code();
            };
            // The guest's bytes go straight from its memory into the buffer: no copy in
            // between (a restored SSE chunk is set once per chunk).
            let (memory, state) = mem.data_and_store_mut(&mut c);
            let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
            let Some(data) = ptr.checked_add(len).and_then(|end| memory.get(ptr..end)) else {
                return Status::InvalidMemoryAccess.code();
            };
            let max = state.host.limits.max_buffered_body;
            match buffer_ref(state, ty) {
                Ok(buf) => {
                    let start = (start as u32 as usize).min(buf.len());
                    let end = start.saturating_add(size as u32 as usize).min(buf.len());
                    if buf.len() - (end - start) + data.len() > max {
                        return Status::BadArgument.code();
                    }
                    if start == 0 && end == buf.len() {
                        // The usual case, the whole body replaced: reuse its allocation.
                        buf.clear();
                        buf.extend_from_slice(data);
                    } else {
                        buf.splice(start..end, data.iter().copied());
                    }
                    Status::Ok.code()
                }
                Err(e) => e.code(),
            }
        },
    )?;
    Ok(())
}

fn define_maps(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C, ty: i32, ptr_ptr: i32, size_ptr: i32| {
            count(&mut c, "proxy_get_header_map_pairs");
            give_scratch(&mut c, ptr_ptr, size_ptr, |c, out| {
                match map_ref(c.data_mut(), ty) {
                    Ok(m) => abi::serialize_map_into(m, out),
                    // A root context has no maps: an empty map, which the SDK accepts.
                    Err(Status::NotFound) => abi::serialize_map_into(&[], out),
                    Err(e) => return Err(e),
                }
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C, ty: i32, ret: i32| -> i32 {
            count(&mut c, "proxy_get_header_map_size");
            let size = match map_ref(c.data_mut(), ty) {
                Ok(m) => abi::serialized_map_len(m),
                Err(e) => return e.code(),
            };
            code(write_u32(&mut c, ret, size as u32))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C, ty: i32, ptr: i32, len: i32| -> i32 {
            count(&mut c, "proxy_set_header_map_pairs");
            let bytes = match read(&c, ptr, len) {
                Ok(b) => b,
                Err(e) => return e.code(),
            };
            let Some(pairs) = abi::deserialize_map(&bytes) else {
                return Status::BadArgument.code();
            };
            match map_ref(c.data_mut(), ty) {
                Ok(m) => {
                    *m = normalize(pairs);
                    Status::Ok.code()
                }
                Err(e) => e.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C, ty: i32, kp: i32, kl: i32, ptr_ptr: i32, size_ptr: i32| {
            count(&mut c, "proxy_get_header_map_value");
            // The key is compared where it lies in guest memory and the value is copied
            // into the reusable scratch buffer: no allocation for a lookup.
            give_scratch(&mut c, ptr_ptr, size_ptr, |c, out| {
                let mem = c.data().memory.ok_or(Status::InvalidMemoryAccess)?;
                let (memory, state) = mem.data_and_store_mut(c);
                let (kp, kl) = (kp as u32 as usize, kl as u32 as usize);
                let key = kp
                    .checked_add(kl)
                    .and_then(|end| memory.get(kp..end))
                    .ok_or(Status::InvalidMemoryAccess)?;
                let key = String::from_utf8_lossy(key);
                let value = header_get(map_ref(state, ty)?, &key).ok_or(Status::NotFound)?;
                out.extend_from_slice(value.as_bytes());
                Ok(())
            })
        },
    )?;
    type Edit = fn(&mut abi::Headers, &str, &str);
    let edits: [(&'static str, Edit); 2] = [
        ("proxy_add_header_map_value", header_add),
        ("proxy_replace_header_map_value", header_replace),
    ];
    for (name, edit) in edits {
        linker.func_wrap(
            "env",
            name,
            move |mut c: C, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
                count(&mut c, name);
                let (key, value) = match (read_str(&c, kp, kl), read_str(&c, vp, vl)) {
                    (Ok(k), Ok(v)) => (k, v),
                    _ => return Status::InvalidMemoryAccess.code(),
                };
                match map_ref(c.data_mut(), ty) {
                    Ok(m) => {
                        edit(m, &key, &value);
                        Status::Ok.code()
                    }
                    Err(e) => e.code(),
                }
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C, ty: i32, kp: i32, kl: i32| -> i32 {
            count(&mut c, "proxy_remove_header_map_value");
            let key = match read_str(&c, kp, kl) {
                Ok(k) => k,
                Err(e) => return e.code(),
            };
            match map_ref(c.data_mut(), ty) {
                Ok(m) => {
                    header_remove(m, &key);
                    Status::Ok.code()
                }
                Err(e) => e.code(),
            }
        },
    )?;
    Ok(())
}

fn define_properties(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C, pp: i32, pl: i32, ptr_ptr: i32, size_ptr: i32| {
            count(&mut c, "proxy_get_property");
            let path = match read(&c, pp, pl) {
                Ok(p) => p,
                Err(e) => return Ok(e.code()),
            };
            let parts: Vec<String> = path
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            match crate::properties::lookup(c.data_mut(), &parts) {
                Some(value) => give(&mut c, &value, ptr_ptr, size_ptr),
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C, pp: i32, pl: i32, vp: i32, vl: i32| -> i32 {
            count(&mut c, "proxy_set_property");
            let (path, value) = match (read(&c, pp, pl), read(&c, vp, vl)) {
                (Ok(p), Ok(v)) => (p, v),
                _ => return Status::InvalidMemoryAccess.code(),
            };
            let key = String::from_utf8_lossy(&path).replace('\0', ".");
            if let Some(stream) = c.data_mut().stream() {
                stream.properties.insert(key, value);
            }
            Status::Ok.code()
        },
    )?;
    Ok(())
}

fn define_shared(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C, kp: i32, kl: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| {
            count(&mut c, "proxy_get_shared_data");
            let key = match read_str(&c, kp, kl) {
                Ok(k) => k,
                Err(e) => return Ok(e.code()),
            };
            if let Err(e) = check(&c, cas_ptr, 4) {
                return Ok(e.code());
            }
            let Some((value, cas)) = c.data().host.shared.get_data(&key) else {
                return Ok(Status::NotFound.code());
            };
            let status = give(&mut c, &value, ptr_ptr, size_ptr)?;
            if status != 0 {
                return Ok(status);
            }
            Ok(code(write_u32(&mut c, cas_ptr, cas)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> i32 {
            count(&mut c, "proxy_set_shared_data");
            match (read_str(&c, kp, kl), read(&c, vp, vl)) {
                (Ok(k), Ok(v)) => c.data().host.shared.set_data(&k, v, cas as u32).code(),
                _ => Status::InvalidMemoryAccess.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C, np: i32, nl: i32, ret: i32| -> i32 {
            count(&mut c, "proxy_register_shared_queue");
            let name = match read_str(&c, np, nl) {
                Ok(n) => n,
                Err(e) => return e.code(),
            };
            let s = c.data();
            let id = s.host.shared.register_queue(&s.host.vm_id, &name, s.serial);
            code(write_u32(&mut c, ret, id))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> i32 {
            count(&mut c, "proxy_resolve_shared_queue");
            let (vm, name) = match (read_str(&c, vp, vl), read_str(&c, np, nl)) {
                (Ok(v), Ok(n)) => (v, n),
                _ => return Status::InvalidMemoryAccess.code(),
            };
            match c.data().host.shared.resolve_queue(&vm, &name) {
                Some(id) => code(write_u32(&mut c, ret, id)),
                None => Status::NotFound.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: C, id: i32, vp: i32, vl: i32| -> i32 {
            count(&mut c, "proxy_enqueue_shared_queue");
            match read(&c, vp, vl) {
                Ok(v) => c.data().host.shared.enqueue(id as u32, v).code(),
                Err(e) => e.code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C, id: i32, ptr_ptr: i32, size_ptr: i32| {
            count(&mut c, "proxy_dequeue_shared_queue");
            match c.data().host.shared.dequeue(id as u32) {
                Ok(item) => give(&mut c, &item, ptr_ptr, size_ptr),
                Err(e) => Ok(e.code()),
            }
        },
    )?;
    Ok(())
}

fn define_metrics(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C, ty: i32, np: i32, nl: i32, ret: i32| -> i32 {
            count(&mut c, "proxy_define_metric");
            let Some(kind) = MetricKind::from_raw(ty) else {
                return Status::BadArgument.code();
            };
            let name = match read_str(&c, np, nl) {
                Ok(n) => n,
                Err(e) => return e.code(),
            };
            let id = c.data().host.shared.define_metric(kind, &name);
            code(write_u32(&mut c, ret, id))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: C, id: i32, offset: i64| -> i32 {
            count(&mut c, "proxy_increment_metric");
            c.data()
                .host
                .shared
                .increment_metric(id as u32, offset)
                .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: C, id: i32, value: i64| -> i32 {
            count(&mut c, "proxy_record_metric");
            c.data()
                .host
                .shared
                .record_metric(id as u32, value as u64)
                .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C, id: i32, ret: i32| -> i32 {
            count(&mut c, "proxy_get_metric");
            match c.data().host.shared.get_metric(id as u32) {
                Ok(v) => code(write(&mut c, ret, &v.to_le_bytes())),
                Err(e) => e.code(),
            }
        },
    )?;
    Ok(())
}

fn resume(c: &mut C, stream_type: i32) -> i32 {
    let Some(stream) = c.data_mut().stream() else {
        return Status::NotFound.code();
    };
    match stream_type {
        0 => stream.request.resume = true,
        1 => stream.response.resume = true,
        _ => return Status::Unimplemented.code(),
    }
    Status::Ok.code()
}

fn define_streams(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_continue_stream", |mut c: C, ty: i32| -> i32 {
        count(&mut c, "proxy_continue_stream");
        resume(&mut c, ty)
    })?;
    linker.func_wrap("env", "proxy_continue_request", |mut c: C| -> i32 {
        count(&mut c, "proxy_continue_request");
        resume(&mut c, 0)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: C| -> i32 {
        count(&mut c, "proxy_continue_response");
        resume(&mut c, 1)
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: C, ty: i32| -> i32 {
        count(&mut c, "proxy_close_stream");
        if !(0..=1).contains(&ty) {
            return Status::Unimplemented.code();
        }
        match c.data_mut().stream() {
            Some(stream) => {
                stream.closed = true;
                Status::Ok.code()
            }
            None => Status::NotFound.code(),
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> i32 {
            count(&mut c, "proxy_send_local_response");
            let (details, body, headers) =
                match (read_str(&c, dp, dl), read(&c, bp, bl), read(&c, hp, hl)) {
                    (Ok(d), Ok(b), Ok(h)) => (d, b, h),
                    _ => return Status::InvalidMemoryAccess.code(),
                };
            let Some(headers) = abi::deserialize_map(&headers) else {
                return Status::BadArgument.code();
            };
            let Ok(status) = u16::try_from(status) else {
                return Status::BadArgument.code();
            };
            if !(100..=999).contains(&status) {
                return Status::BadArgument.code();
            }
            let Some(stream) = c.data_mut().stream() else {
                return Status::NotFound.code();
            };
            if stream.in_local_reply {
                // Already answering locally; Envoy ignores a second local reply too.
                return Status::Ok.code();
            }
            stream.local = Some(LocalResponse {
                status,
                headers: normalize(headers),
                body,
                details,
            });
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         ret: i32|
         -> i32 {
            count(&mut c, "proxy_http_call");
            let (cluster, headers, body) =
                match (read_str(&c, up, ul), read(&c, hp, hl), read(&c, bp, bl)) {
                    (Ok(u), Ok(h), Ok(b)) => (u, h, b),
                    _ => return Status::InvalidMemoryAccess.code(),
                };
            if let Err(e) = check(&c, ret, 4) {
                return e.code();
            }
            let Some(headers) = abi::deserialize_map(&headers) else {
                return Status::BadArgument.code();
            };
            let s = c.data_mut();
            if !s.host.clusters.contains_key(&cluster)
                || header_get(&headers, ":method").is_none()
                || header_get(&headers, ":path").is_none()
            {
                return Status::BadArgument.code();
            }
            let timeout = match timeout as u32 {
                0 => s.host.limits.default_callout_timeout,
                ms => Duration::from_millis(u64::from(ms)),
            };
            let token = s.next_token;
            s.next_token = s.next_token.wrapping_add(1).max(1);
            let context = s.active;
            s.callouts.push_back(PendingCallout {
                token,
                context,
                cluster,
                headers: normalize(headers),
                body,
                timeout,
            });
            code(write_u32(&mut c, ret, token))
        },
    )?;
    Ok(())
}

/// Defines a stub for every function `module` imports that the linker lacks: `env.proxy_*`
/// answer `Unimplemented`; WASI calls answer `ENOSYS` (52), except the few Rust's standard
/// library needs to start (`random_get`, clocks, empty args and environment).
pub(crate) fn define_stubs(
    linker: &mut Linker<StoreState>,
    module: &Module,
) -> wasmtime::Result<()> {
    let mut missing = Vec::new();
    for import in module.imports() {
        if let ExternType::Func(ty) = import.ty() {
            missing.push((import.module().to_string(), import.name().to_string(), ty));
        }
    }
    for (module_name, name, ty) in missing {
        let wasi = module_name.starts_with("wasi");
        let stub_code = stub_result(wasi, &name);
        let results: Vec<ValType> = ty.results().collect();
        let name_for_trap = name.clone();
        // Shadowing is off: defining an import the linker already has fails, and is skipped.
        let _ = linker.func_new(&module_name, &name, ty, move |mut c, params, out| {
            c.data_mut().host_calls.count_other(&name_for_trap);
            if wasi && name_for_trap == "proc_exit" {
                return Err(wasmtime::format_err!("guest called proc_exit"));
            }
            if wasi && name_for_trap == "random_get" {
                fill_random(&mut c, params);
            }
            for (slot, ty) in out.iter_mut().zip(&results) {
                *slot = match ty {
                    ValType::I32 => Val::I32(stub_code),
                    ValType::I64 => Val::I64(i64::from(stub_code)),
                    ValType::F32 => Val::F32(0),
                    ValType::F64 => Val::F64(0),
                    _ => Val::I32(0),
                };
            }
            Ok(())
        });
    }
    Ok(())
}

fn stub_result(wasi: bool, name: &str) -> i32 {
    if !wasi {
        return Status::Unimplemented.code();
    }
    match name {
        "random_get" | "args_sizes_get" | "environ_sizes_get" | "args_get" | "environ_get"
        | "clock_time_get" | "sched_yield" => 0,
        _ => 52,
    }
}

fn fill_random(c: &mut C, params: &[Val]) {
    let (Some(Val::I32(ptr)), Some(Val::I32(len))) = (params.first(), params.get(1)) else {
        return;
    };
    let mut seed = now_nanos() | 1;
    let bytes: Vec<u8> = (0..*len as u32)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let _ = write(c, *ptr, &bytes);
}
