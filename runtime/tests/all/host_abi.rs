//! The proxy-wasm ABI as the probe filter exercises it.

use crate::common::{http_server, module_cache, passthrough, probe, probe_host, temp_dir};
use writ_runtime::{
    Host, HostConfig, HostError, MetricKind, RequestSpec, StreamInfo, UpstreamReply,
};

fn ok_reply(_: &writ_runtime::UpstreamRequest) -> UpstreamReply {
    UpstreamReply::new(200, &[("content-type", "application/json")], b"{}")
}

fn metric(ex: &writ_runtime::Exchange, name: &str) -> i64 {
    ex.metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
        .unwrap_or(-1)
}

#[test]
fn headers_body_properties_and_logs() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let mut req = RequestSpec::new(
        "POST",
        "/v1/chat/completions?x=1",
        &[
            ("X-Replace-Me", "original"),
            ("x-remove-me", "gone"),
            ("x-request-id", "rid-42"),
            ("content-type", "application/json"),
        ],
        b"",
    );
    req.body = vec![b"my sec".to_vec(), b"ret is safe".to_vec()];
    req.info = StreamInfo {
        source: Some("127.0.0.9:5555".parse().unwrap()),
        ..StreamInfo::default()
    };
    let mut seen = None;
    let ex = vm.http_request(&req, |up| {
        seen = Some(up.clone());
        UpstreamReply {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: vec![b"hello wor".to_vec(), b"ld".to_vec()],
        }
    });
    assert_eq!(ex.error, None);
    let up = ex.upstream_request.clone().unwrap();
    assert_eq!(Some(up.clone()), seen);
    assert_eq!(up.header("x-probe-seen"), Some("1"));
    assert_eq!(up.header("x-replace-me"), Some("replaced"));
    assert_eq!(up.header("x-remove-me"), None);
    assert_eq!(up.header("x-probe-request-id"), Some("rid-42"));
    assert_eq!(up.header("x-probe-plugin-name"), Some("probe-plugin"));
    assert_eq!(
        up.header("x-probe-prop-path"),
        Some("/v1/chat/completions?x=1")
    );
    assert_eq!(up.header("x-probe-prop-method"), Some("POST"));
    assert_eq!(up.header("x-probe-source"), Some("127.0.0.9:5555"));
    assert_eq!(up.header(":method"), Some("POST"));
    // Body chunks were buffered (the filter paused until end of stream) and rewritten.
    assert_eq!(up.body, b"my [redacted] is safe");
    // The response body was buffered too and released as one chunk.
    assert_eq!(ex.client_response.status, 201);
    assert_eq!(ex.client_response.body, vec![b"hello WORLD".to_vec()]);
    assert_eq!(ex.client_response.header("x-probe-response"), Some("1"));
    assert_eq!(
        ex.client_response.header("x-probe-upstream-status"),
        Some("201")
    );
    let logs: Vec<&str> = ex.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(logs, vec!["request /v1/chat/completions?x=1 mode=", "done"]);
    assert_eq!(metric(&ex, "probe_requests_total"), 1);
    assert_eq!(metric(&ex, "probe_inflight"), 0);
    let hist = ex
        .metrics
        .iter()
        .find(|m| m.name == "probe_body_bytes")
        .unwrap();
    assert_eq!(hist.kind, MetricKind::Histogram);
    assert_eq!((hist.value, hist.sum), (1, Some(17)));
    let text = host.prometheus();
    assert!(
        text.contains("# TYPE probe_requests_total counter\nprobe_requests_total 1"),
        "{text}"
    );
    assert!(
        text.contains("probe_body_bytes_bucket{le=\"25\"} 1"),
        "{text}"
    );
    assert!(text.contains("probe_body_bytes_sum 17"), "{text}");
}

#[test]
fn local_response_runs_response_callbacks() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let req = RequestSpec::new("POST", "/", &[("x-probe", "deny")], b"{}");
    let ex = vm.http_request(&req, |_| panic!("upstream must not be called"));
    assert_eq!(ex.upstream_request, None);
    let local = ex.local_response.clone().unwrap();
    assert_eq!(local.status, 403);
    assert_eq!(ex.client_response.status, 403);
    assert_eq!(ex.client_response.header("x-denied"), Some("yes"));
    assert_eq!(ex.client_response.header("x-probe-response"), Some("1"));
    assert_eq!(
        ex.client_response.header("x-probe-upstream-status"),
        Some("403")
    );
    assert_eq!(ex.client_response.body_bytes(), b"{\"error\":\"denied\"}");

    let req = RequestSpec::new("POST", "/", &[], b"please block-in-body");
    let ex = vm.http_request(&req, |_| panic!("upstream must not be called"));
    assert_eq!(ex.client_response.status, 400);
    assert_eq!(
        ex.client_response.header("content-type"),
        Some("text/plain")
    );
    assert_eq!(ex.client_response.body_bytes(), b"blocked body");
}

#[test]
fn sse_chunks_stream_one_by_one() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let req = RequestSpec::new("POST", "/v1/chat/completions", &[], b"{\"stream\":true}");
    let events: Vec<Vec<u8>> = [
        "data: {\"a\":\"x\"}\n\n",
        "data: {\"a\":\"y\"}\n\n",
        "data: [DONE]\n\n",
    ]
    .iter()
    .map(|e| e.as_bytes().to_vec())
    .collect();
    let ex = vm.http_request(&req, |_| UpstreamReply {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        body: events.clone(),
    });
    let expected: Vec<Vec<u8>> = events
        .iter()
        .map(|e| String::from_utf8_lossy(e).to_uppercase().into_bytes())
        .collect();
    assert_eq!(ex.client_response.body, expected);
}

#[test]
fn streaming_api_holds_and_releases() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let id = vm.open_stream(StreamInfo::default()).unwrap();
    let headers =
        RequestSpec::new("POST", "/x", &[("x-probe", "hold-headers")], b"").wire_headers();
    let flow = vm.request_headers(id, headers, false).unwrap();
    assert!(flow.is_paused());
    let flow = vm.request_body(id, b"part one, ", false).unwrap();
    assert!(flow.is_paused());
    let flow = vm.request_body(id, b"part two", true).unwrap();
    let released = flow.headers.unwrap();
    assert_eq!(released[0], (":method".to_string(), "POST".to_string()));
    assert_eq!(flow.body, b"part one, part two");
    assert!(flow.end_of_stream);
    let report = vm.close_stream(id).unwrap();
    assert_eq!(report.logs.len(), 2);
    assert!(matches!(vm.close_stream(id), Err(HostError::UnknownStream)));
    assert_eq!(vm.open_streams(), 0);
}

#[test]
fn header_pairs_time_and_unimplemented() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let one = |vm: &mut writ_runtime::Vm, mode: &str| {
        let ex = vm.http_request(
            &RequestSpec::new("GET", "/p", &[("x-probe", mode)], b""),
            ok_reply,
        );
        assert_eq!(ex.error, None, "{mode}");
        ex.upstream_request.unwrap()
    };
    let up = one(&mut vm, "pairs");
    assert_eq!(up.header(":path"), Some("/rewritten"));
    // 4 pseudo-headers + x-probe + 6 added by the probe.
    assert_eq!(up.header("x-set-map"), Some("11"));
    assert_eq!(one(&mut vm, "time").header("x-time-ok"), Some("true"));
    assert_eq!(
        one(&mut vm, "unimplemented").header("x-unimplemented"),
        Some("12")
    );
    assert_eq!(one(&mut vm, "badptr").header("x-badptr"), Some("6"));
    let up = one(&mut vm, "unsupported");
    assert_eq!(up.header("x-foreign"), Some("Some(NotFound)"));
    assert_eq!(up.header("x-grpc"), Some("Some(InternalFailure)"));
}

#[test]
fn shared_data_cas_has_no_lost_updates() {
    let host = probe_host("");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                let mut vm = host.vm().unwrap();
                let mut written = Vec::new();
                for _ in 0..25 {
                    let ex = vm.http_request(
                        &RequestSpec::new("GET", "/", &[("x-probe", "shared")], b""),
                        ok_reply,
                    );
                    let up = ex.upstream_request.unwrap();
                    assert_eq!(up.header("x-shared-stale"), Some("Some(CasMismatch)"));
                    written.push(up.header("x-shared-counter").unwrap_or("").to_string());
                }
                written
            })
        })
        .collect();
    let mut written: Vec<u64> = Vec::new();
    for t in threads {
        written.extend(
            t.join()
                .unwrap()
                .iter()
                .map(|v| v.parse::<u64>().unwrap_or(0)),
        );
    }
    // Every successful compare-and-swap wrote the next value exactly once.
    written.sort_unstable();
    assert_eq!(written, (1..=100).collect::<Vec<u64>>());
    assert_eq!(host.shared_data("counter"), Some(b"100".to_vec()));
    let requests = host
        .metrics()
        .into_iter()
        .find(|m| m.name == "probe_requests_total");
    assert_eq!(requests.map(|m| m.value), Some(100));
}

#[test]
fn shared_queue_notifies_its_owner() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let ex = vm.http_request(
        &RequestSpec::new("GET", "/", &[("x-probe", "queue")], b""),
        ok_reply,
    );
    assert_eq!(ex.error, None);
    assert_eq!(host.shared_data("queue_last"), Some(b"hello".to_vec()));
}

#[test]
fn ticks_follow_the_period() {
    let host = probe_host("tick_ms=5");
    let mut vm = host.vm().unwrap();
    let ticks = || {
        host.metrics()
            .into_iter()
            .find(|m| m.name == "probe_ticks_total")
            .map_or(-1, |m| m.value)
    };
    vm.tick().unwrap();
    let before = ticks();
    assert!(before >= 1);
    let due = vm.next_tick().unwrap();
    assert!(due > std::time::Instant::now() - std::time::Duration::from_millis(5));
    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    std::thread::sleep(std::time::Duration::from_millis(2));
    vm.run_timers().unwrap();
    assert_eq!(ticks(), before + 1);
    let logs = vm.take_root_logs();
    assert_eq!(logs[0].message, "vm start: ");
}

#[test]
fn http_callout_reaches_a_named_cluster() {
    let base = http_server(200, "found");
    let mut config = HostConfig::new(probe());
    config.clusters.insert("backend".to_string(), base);
    config.limits.max_vms = 4;
    config.cache_dir = Some(module_cache());
    let host = Host::new(config).unwrap();
    let mut vm = host.vm().unwrap();
    let ex = vm.http_request(
        &RequestSpec::new("GET", "/", &[("x-probe", "callout")], b""),
        ok_reply,
    );
    assert_eq!(ex.error, None);
    let up = ex.upstream_request.unwrap();
    assert_eq!(up.header("x-callout-status"), Some("200"));
    assert_eq!(up.header("x-callout-body"), Some("found"));

    let ex = vm.http_request(
        &RequestSpec::new("GET", "/", &[("x-probe", "callout-unknown")], b""),
        ok_reply,
    );
    let up = ex.upstream_request.unwrap();
    assert_eq!(up.header("x-callout-error"), Some("Some(BadArgument)"));
}

#[test]
fn compiled_module_is_cached_on_disk() {
    let dir = temp_dir("cache");
    let config = || {
        let mut c = HostConfig::new(passthrough());
        c.cache_dir = Some(dir.clone());
        c.limits.max_vms = 2;
        c
    };
    let first = Host::new(config()).unwrap();
    assert!(!first.loaded_from_cache());
    let second = Host::new(config()).unwrap();
    assert!(second.loaded_from_cache());
    assert_eq!(first.module_sha256(), second.module_sha256());
    // A corrupt entry is recompiled, not trusted. (Replaced by rename, never rewritten in
    // place: a loaded module maps its file, as the host's own writes also respect.)
    drop((first, second));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, b"garbage").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let third = Host::new(config()).unwrap();
    assert!(!third.loaded_from_cache());
    let ex = third
        .vm()
        .unwrap()
        .http_request(&RequestSpec::new("GET", "/", &[], b""), ok_reply);
    assert_eq!(ex.client_response.status, 200);
    assert!(Host::new(config()).unwrap().loaded_from_cache());
}

#[test]
fn configuration_can_be_refused() {
    let mut config = HostConfig::new(probe());
    config.plugin_config = b"reject".to_vec();
    config.limits.max_vms = 2;
    config.cache_dir = Some(module_cache());
    assert!(matches!(
        Host::new(config),
        Err(HostError::ConfigureRejected)
    ));
    let mut config = HostConfig::new(b"not wasm".to_vec());
    config.limits.max_vms = 2;
    assert!(matches!(Host::new(config), Err(HostError::Compile(_))));
}

#[test]
fn response_phase_local_reply_replaces_the_upstream_reply() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let req = RequestSpec::new("GET", "/", &[("x-probe", "deny-response")], b"");
    let ex = vm.http_request(&req, |_| UpstreamReply::new(200, &[], b"secret reply"));
    assert!(ex.upstream_request.is_some());
    assert_eq!(ex.client_response.status, 502);
    assert_eq!(ex.client_response.header("x-blocked"), Some("reply"));
    assert_eq!(ex.client_response.body_bytes(), b"blocked reply");
}

#[test]
fn trailers_release_a_buffered_body() {
    let host = probe_host("");
    let mut vm = host.vm().unwrap();
    let id = vm.open_stream(StreamInfo::default()).unwrap();
    let headers = RequestSpec::new("POST", "/t", &[], b"").wire_headers();
    assert!(
        vm.request_headers(id, headers, false)
            .unwrap()
            .headers
            .is_some()
    );
    assert!(vm.request_body(id, b"held", false).unwrap().is_paused());
    let flow = vm
        .request_trailers(id, vec![("x-trailer".into(), "1".into())])
        .unwrap();
    assert_eq!(flow.body, b"held");
    assert_eq!(
        flow.trailers,
        Some(vec![("x-trailer".to_string(), "1".to_string())])
    );
    assert!(flow.end_of_stream);
    vm.close_stream(id).unwrap();
}

#[test]
fn deferred_callouts_are_left_to_the_driver() {
    let mut config = HostConfig::new(probe());
    config
        .clusters
        .insert("backend".to_string(), "http://127.0.0.1:9".to_string());
    config.cache_dir = Some(module_cache());
    config.limits.max_vms = 4;
    let host = Host::new(config).unwrap();
    let mut vm = host.vm().unwrap();
    vm.set_deferred_callouts(true);
    let id = vm.open_stream(StreamInfo::default()).unwrap();
    let headers = RequestSpec::new("GET", "/", &[("x-probe", "callout")], b"").wire_headers();
    assert!(vm.request_headers(id, headers, true).unwrap().is_paused());
    let callouts = vm.take_callouts();
    assert_eq!(callouts.len(), 1);
    let call = &callouts[0];
    assert_eq!((call.stream, call.cluster.as_str()), (Some(id), "backend"));
    assert_eq!(call.base_url, "http://127.0.0.1:9");
    assert!(
        call.headers
            .contains(&(":path".to_string(), "/lookup".to_string()))
    );
    let reply = writ_runtime::CalloutReply {
        headers: vec![(":status".into(), "201".into())],
        body: b"later".to_vec(),
    };
    let flow = vm.complete_callout(call, Some(reply)).unwrap();
    let released = flow.headers.unwrap();
    assert!(released.contains(&("x-callout-status".to_string(), "201".to_string())));
    assert!(released.contains(&("x-callout-body".to_string(), "later".to_string())));
    assert!(flow.end_of_stream);
    assert!(vm.take_callouts().is_empty());
    vm.close_stream(id).unwrap();
}
