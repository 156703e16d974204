//! The proxy-wasm ABI 0.2.1 vocabulary: status codes, enums and the serialized header-map
//! format shared by the guest and the host. Pure data, no wasmtime.

/// Status codes a host call returns to the guest (`WasmResult` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    /// The raw value handed back to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Which header map a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    /// Decodes the guest's map type; gRPC metadata maps are not supported.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            6 => Self::CallResponseHeaders,
            7 => Self::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// Which buffer a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    CallResponseBody,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    /// Decodes the guest's buffer type; network and gRPC buffers are not supported.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::RequestBody,
            1 => Self::ResponseBody,
            4 => Self::CallResponseBody,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            _ => return None,
        })
    }
}

/// The kind of a metric, as the guest defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// Decodes the guest's metric type.
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}

/// Log level of a `proxy_log` call.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    /// Decodes the guest's level; unknown levels are treated as `Critical` so they are seen.
    pub fn from_raw(raw: i32) -> Self {
        match raw {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            _ => Self::Critical,
        }
    }
}

/// An ordered multimap of header names to values, as a proxy sees them.
pub type Headers = Vec<(String, String)>;

/// Serializes a header map in the ABI format: count, then (key len, value len) pairs, then
/// each key and value followed by a NUL byte.
pub fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_map_into(map, &mut out);
    out
}

/// The length of [`serialize_map`]'s output, without building it (`proxy_get_header_map_size`).
pub fn serialized_map_len(map: &[(String, String)]) -> usize {
    4 + map
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>()
}

/// [`serialize_map`] into `out` (cleared first), so a host can reuse one buffer for every
/// call instead of allocating one per call.
pub fn serialize_map_into(map: &[(String, String)], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(serialized_map_len(map));
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
}

/// Parses the ABI map format; `None` when the bytes are malformed (the guest gets
/// `BadArgument`, never a trap). An empty input is an empty map.
pub fn deserialize_map(bytes: &[u8]) -> Option<Headers> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    if data > bytes.len() {
        return None;
    }
    let mut map = Vec::with_capacity(count);
    for n in 0..count {
        let key_len = word(4 + n * 8)?;
        let value_len = word(8 + n * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data = data.checked_add(key_len + 1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len + 1)?;
        map.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_length_is_the_serialized_length() {
        let map: Headers = vec![
            (":status".into(), "200".into()),
            ("x-a".into(), String::new()),
        ];
        assert_eq!(serialized_map_len(&map), serialize_map(&map).len());
        assert_eq!(serialized_map_len(&[]), serialize_map(&[]).len());
        let mut reused = b"stale".to_vec();
        serialize_map_into(&map, &mut reused);
        assert_eq!(reused, serialize_map(&map));
    }

    #[test]
    fn map_round_trips() {
        let map = vec![
            (":method".to_string(), "GET".to_string()),
            ("x-empty".to_string(), String::new()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(deserialize_map(&bytes), Some(map));
    }

    #[test]
    fn malformed_maps_are_refused() {
        assert_eq!(deserialize_map(&[5, 0, 0, 0, 1]), None);
        assert_eq!(
            deserialize_map(&[1, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(deserialize_map(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(deserialize_map(&[]), Some(vec![]));
    }
}
