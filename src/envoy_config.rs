//! Generates a complete Envoy v3 bootstrap that runs a writ artifact as an HTTP wasm filter.
//!
//! The output is meant to work exactly as printed (`writ envoy a.wasm --upstream … > envoy.yaml
//! && envoy -c envoy.yaml`), so every choice a deployment must get right for writ to enforce is
//! made here once, with its reason beside it in the emitted YAML:
//!
//! - `runtime: envoy.wasm.runtime.v8`: the only wasm runtime compiled into Envoy release builds.
//! - `allow_on_headers_stop_iteration: true`: the engine pauses in the request-headers callback
//!   until the body has arrived; without this flag Envoy hangs such a request.
//! - `failure_policy`: `FAIL_CLOSED` by default. A VM that traps (a bug, an SDK panic on an
//!   unexpected host status) then answers 503 to every request until Envoy restarts: nothing
//!   passes unchecked. `FAIL_RELOAD` (`--failure-policy reload`) is also fail-closed for the
//!   requests in flight, but recreates the VM with backoff so traffic resumes (1.1–1.4 s in
//!   the tests here with Envoy 1.40); choose it when availability matters more than noticing
//!   the crash. `FAIL_OPEN` is never offered: it lets later requests bypass the policy.
//! - `vm_id` is stable per policy name (not per version), so workers share one shared-data
//!   namespace (budgets, kill switch) and a new version keeps the counters of the old.
//! - The request buffer limit bounds what the filter may buffer; larger bodies get a 413 from
//!   Envoy before the filter runs.
//! - Trusted identity headers: a `header_mutation` filter first removes the client's copies,
//!   then (with a verifier) `jwt_authn` sets them from a verified token's claims, and a
//!   `local_reply_config` mapper turns its 401 into an OpenAI-style error; see
//!   `docs/security.md` for the ordering and why Envoy itself refuses bad tokens.
//! - A TLS upstream's certificate is verified against a CA bundle and must name the host:
//!   Envoy's default would accept any certificate, sending prompts to whoever answers.
//! - `stats_config.stats_tags`: writ's metrics carry their labels in the stat name; one regex
//!   per label turns them into tags, so `/stats/prometheus` prints real labels
//!   (`docs/metrics.md`).
//!
//! The artifact's sha256 is read from the file itself and recorded both in a comment and in
//! the node metadata (visible at the admin `/server_info`), so an operator can tell which
//! artifact a running Envoy loaded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What Envoy does when the wasm VM fails; see the module docs for why there is no fail-open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Answer 503 to every request after a VM failure, until Envoy restarts.
    #[default]
    Closed,
    /// Answer 503 while the VM is recreated with backoff, then enforce again.
    Reload,
}

impl FailurePolicy {
    /// The name of the policy in Envoy's `FailurePolicy` enum.
    fn envoy_name(self) -> &'static str {
        match self {
            FailurePolicy::Closed => "FAIL_CLOSED",
            FailurePolicy::Reload => "FAIL_RELOAD",
        }
    }
}

/// An extra upstream a policy may call out to (a review queue, an audit sink): the filter
/// addresses it by `name` in `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraCluster {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A workflow whose fallback Envoy's router carries out itself (`docs/fallback.md`): a
/// route for the requests its header names, to an aggregate cluster of the default
/// upstream and its fallback clusters, retried to the next cluster on the failures
/// listed. Built by `writ envoy` from the policy (`writ_plugin::fallback::envoy_chain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackRoute {
    /// The request header (lower case) and value that tell the workflow.
    pub header: String,
    pub value: String,
    /// The fallback clusters, in order, each one of [`EnvoyConfig::clusters`].
    pub clusters: Vec<String>,
    /// Envoy's `retry_on` conditions (`5xx`, `connect-failure`, …).
    pub retry_on: Vec<&'static str>,
    /// `retriable_status_codes` (429 for `on 429`).
    pub statuses: Vec<u16>,
}

/// Everything the generated bootstrap depends on. Build it with [`EnvoyConfig::new`] and set
/// the public fields to change the defaults.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// Absolute path of the artifact, as Envoy will open it.
    pub artifact: PathBuf,
    /// sha256 (hex) of the artifact bytes.
    pub artifact_sha256: String,
    /// Shared-data namespace of the VM; the policy name by default.
    pub vm_id: String,
    /// `<policy> <version>` from the artifact's `writ.manifest` section, when it has one.
    pub policy: Option<String>,
    pub upstream_host: String,
    pub upstream_port: u16,
    /// Whether the upstream speaks TLS (port 443 unless told otherwise).
    pub upstream_tls: bool,
    /// CA bundle (PEM) that verifies a TLS upstream's certificate.
    pub upstream_ca: PathBuf,
    pub listen_host: String,
    pub listen_port: u16,
    pub admin_host: String,
    pub admin_port: u16,
    pub failure_policy: FailurePolicy,
    /// Per-connection buffer limit: the largest request body the filter can see.
    pub max_request_bytes: u32,
    /// Whole-request timeout on the route; long because model calls stream for minutes.
    pub route_timeout_secs: u32,
    pub clusters: Vec<ExtraCluster>,
    /// Workflows whose fallback clusters Envoy's router retries to itself.
    pub fallback_routes: Vec<FallbackRoute>,
    /// The filter's plugin configuration (a JSON object the engine reads: `review_queue`,
    /// `alert_sink`, `body_limit`). For a writ artifact `artifact_sha256` is added, so
    /// audit records name the artifact.
    pub plugin_config: serde_json::Map<String, serde_json::Value>,
    /// Trusted identity headers (lower case): the client's copies are removed by a
    /// `header_mutation` filter that runs before every other filter.
    pub trusted_headers: Vec<String>,
    /// When set, `jwt_authn` verifies a bearer token on every request (except the exempt
    /// paths) and sets the trusted headers from its claims.
    pub jwt: Option<JwtAuthn>,
    /// Where Envoy fetches the module from, instead of reading the local file: Envoy then
    /// checks the fetched bytes against `artifact_sha256` and refuses any other module.
    pub artifact_url: Option<ArtifactUrl>,
    /// How often Envoy retries a failed fetch (or a fetch whose hash differs) at start-up.
    pub artifact_fetch_retries: u32,
    /// A file Envoy's access log writes the filter's hash-chained audit records to, one
    /// line per record, whatever Envoy's log level (`writ envoy --audit-log`).
    pub audit_log: Option<PathBuf>,
    /// Envoy's OpenTelemetry tracer, exporting to an OTLP/HTTP receiver (`--otlp`).
    pub otlp: Option<OtlpTracing>,
}

/// Where Envoy's OpenTelemetry tracer sends its spans (`writ envoy --otlp`), and the tags
/// it adds to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTracing {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `service.name` of Envoy's spans.
    pub service_name: String,
    /// `gen_ai.provider.name`, a literal tag on every span.
    pub provider_name: String,
}

impl OtlpTracing {
    /// The receiver from `HOST:PORT` or `http(s)://HOST:PORT`.
    pub fn parse(spec: &str) -> Result<OtlpTracing, EnvoyConfigError> {
        let (host, port, tls) = parse_upstream(spec)?;
        Ok(OtlpTracing {
            host,
            port,
            tls,
            service_name: "writ-envoy".into(),
            provider_name: "openai".into(),
        })
    }
}

/// An `http(s)://HOST[:PORT]/PATH` the artifact is served from (`writ envoy --artifact-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl ArtifactUrl {
    /// Parses an `http://` or `https://` URL with a path.
    pub fn parse(url: &str) -> Result<ArtifactUrl, EnvoyConfigError> {
        let bad = || EnvoyConfigError::ArtifactUrl(url.to_string());
        let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("https://") {
            (rest, true, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (rest, false, 80)
        } else {
            return Err(bad());
        };
        let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
        if path.is_empty() || url.contains(char::is_whitespace) {
            return Err(bad());
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'));
        let with_port = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let (host, port) = parse_host_port(&with_port).map_err(|_| bad())?;
        Ok(ArtifactUrl {
            url: url.to_string(),
            host,
            port,
            tls,
        })
    }
}

/// The `jwt_authn` provider `writ envoy` emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthn {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    /// `(header, claim)`: `claim_to_headers` entries.
    pub claims: Vec<(String, String)>,
    /// Paths with no token requirement (the kill switch's admin endpoint, which carries
    /// its own bearer token).
    pub exempt_paths: Vec<String>,
}

/// Where `jwt_authn` reads its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwks {
    /// `local_jwks.filename`, read when Envoy starts.
    File(PathBuf),
    /// `remote_jwks`: fetched from `url` through the `writ_jwks` cluster and cached.
    Remote {
        url: String,
        host: String,
        port: u16,
        tls: bool,
    },
}

impl Jwks {
    /// A file path, or an `http(s)://` URL whose host becomes the `writ_jwks` cluster.
    pub fn parse(spec: &str) -> Result<Jwks, EnvoyConfigError> {
        if !(spec.starts_with("http://") || spec.starts_with("https://")) {
            let path = std::path::absolute(spec)
                .map_err(|_| EnvoyConfigError::Address(spec.to_string()))?;
            return Ok(Jwks::File(path));
        }
        let tls = spec.starts_with("https://");
        let rest = spec.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let base = format!("{}://{authority}", if tls { "https" } else { "http" });
        let (host, port, _) = parse_upstream(&base)?;
        Ok(Jwks::Remote {
            url: spec.to_string(),
            host,
            port,
            tls,
        })
    }
}

/// The name of the `jwt_authn` provider, and of the cluster a remote JWKS is fetched by.
const JWT_PROVIDER: &str = "writ";
const JWKS_CLUSTER: &str = "writ_jwks";

/// A problem with the inputs of [`EnvoyConfig::new`].
#[derive(Debug, thiserror::Error)]
pub enum EnvoyConfigError {
    #[error("cannot read artifact `{path}`: {source}")]
    Artifact {
        path: String,
        source: std::io::Error,
    },
    #[error("`{0}` is not a wasm module (no `\\0asm` header)")]
    NotWasm(String),
    #[error("invalid address `{0}`: expected HOST:PORT")]
    Address(String),
    #[error("invalid cluster `{0}`: expected NAME=HOST:PORT")]
    Cluster(String),
    #[error("invalid artifact URL `{0}`: expected http://HOST[:PORT]/PATH or https://…")]
    ArtifactUrl(String),
}

impl EnvoyConfig {
    /// Reads the artifact (for its sha256 and absolute path) and fills in defaults: listener on
    /// `127.0.0.1:10000`, admin on `127.0.0.1:9901`, fail closed, 1 MiB bodies, 300 s routes.
    pub fn new(artifact: &Path, upstream: &str) -> Result<Self, EnvoyConfigError> {
        let artifact_err = |source| EnvoyConfigError::Artifact {
            path: artifact.display().to_string(),
            source,
        };
        let bytes = std::fs::read(artifact).map_err(artifact_err)?;
        if !bytes.starts_with(b"\0asm") {
            return Err(EnvoyConfigError::NotWasm(artifact.display().to_string()));
        }
        let absolute = std::path::absolute(artifact).map_err(artifact_err)?;
        let (upstream_host, upstream_port, upstream_tls) = parse_upstream(upstream)?;
        let manifest = embedded_manifest(&bytes);
        let field = |key: &str| {
            manifest
                .as_ref()
                .and_then(|m| m[key].as_str().map(str::to_string))
        };
        let (name, version) = (field("policy"), field("version"));
        Ok(EnvoyConfig {
            vm_id: name
                .as_ref()
                .map_or_else(|| vm_id_for(&absolute), |n| format!("writ.{n}")),
            policy: name.map(|n| format!("{n} {}", version.unwrap_or_default())),
            artifact: absolute,
            artifact_sha256: hex(&Sha256::digest(&bytes)),
            upstream_tls,
            upstream_ca: PathBuf::from(DEFAULT_CA_BUNDLE),
            upstream_host,
            upstream_port,
            listen_host: "127.0.0.1".into(),
            listen_port: 10000,
            admin_host: "127.0.0.1".into(),
            admin_port: 9901,
            failure_policy: FailurePolicy::default(),
            max_request_bytes: 1024 * 1024,
            route_timeout_secs: 300,
            clusters: Vec::new(),
            fallback_routes: Vec::new(),
            plugin_config: serde_json::Map::new(),
            trusted_headers: Vec::new(),
            jwt: None,
            artifact_url: None,
            artifact_fetch_retries: 3,
            audit_log: None,
            otlp: None,
        })
    }

    /// Sets the listener address from `HOST:PORT`.
    pub fn listen(&mut self, addr: &str) -> Result<(), EnvoyConfigError> {
        (self.listen_host, self.listen_port) = parse_host_port(addr)?;
        Ok(())
    }

    /// Sets the admin address from `HOST:PORT`.
    pub fn admin(&mut self, addr: &str) -> Result<(), EnvoyConfigError> {
        (self.admin_host, self.admin_port) = parse_host_port(addr)?;
        Ok(())
    }

    /// Adds a cluster from `NAME=HOST:PORT`.
    pub fn add_cluster(&mut self, spec: &str) -> Result<(), EnvoyConfigError> {
        let bad = || EnvoyConfigError::Cluster(spec.to_string());
        let (name, addr) = spec.split_once('=').ok_or_else(bad)?;
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name
            || name == UPSTREAM_CLUSTER
            || name == ARTIFACT_CLUSTER
            || name == OTLP_CLUSTER
            || name.starts_with(FALLBACK_CLUSTER)
        {
            return Err(bad());
        }
        let (host, port) = parse_host_port(addr).map_err(|_| bad())?;
        self.clusters.push(ExtraCluster {
            name: name.to_string(),
            host,
            port,
        });
        Ok(())
    }

    /// Renders the bootstrap as YAML.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let artifact = yaml_str(&self.artifact.display().to_string());
        let sha = &self.artifact_sha256;
        let vm_id = yaml_str(&self.vm_id);
        let failure = self.failure_policy.envoy_name();
        // `writeln!` into a String cannot fail.
        let _ = writeln!(
            y,
            "# Envoy v3 bootstrap generated by `writ envoy` {version}.
# artifact: {artifact}
# artifact sha256: {sha}
# policy: {policy}
# Run: envoy -c THIS_FILE
node:
  id: writ-gateway
  cluster: writ
  metadata:
    writ_artifact: {artifact}
    writ_artifact_sha256: {sha}
    writ_policy: {policy_yaml}
admin:
  address:
    socket_address: {{ address: {admin_host}, port_value: {admin_port} }}
static_resources:
  listeners:
  - name: writ_listener
    address:
      socket_address: {{ address: {listen_host}, port_value: {listen_port} }}
    # The largest request body the policy can inspect; larger bodies get 413 before the filter.
    per_connection_buffer_limit_bytes: {max}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: writ
          codec_type: AUTO
          # A client gets 10 s to send its headers; a stream idle for 5 min is closed.
          request_headers_timeout: 10s
          stream_idle_timeout: 300s
          generate_request_id: true
{tracing}          # HTTP/1.0 clients are served as by `writ serve` (Envoy's default answers 426).
          http_protocol_options:
            accept_http_10: true
            default_host_for_http_10: writ
          access_log:
{audit_log}          - name: envoy.access_loggers.stdout
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                json_format:
                  time: \"%START_TIME%\"
                  request_id: \"%REQ(X-REQUEST-ID)%\"
                  method: \"%REQ(:METHOD)%\"
                  path: \"%REQ(:PATH)%\"
                  status: \"%RESPONSE_CODE%\"
                  details: \"%RESPONSE_CODE_DETAILS%\"
                  flags: \"%RESPONSE_FLAGS%\"
                  bytes_received: \"%BYTES_RECEIVED%\"
                  bytes_sent: \"%BYTES_SENT%\"
                  duration_ms: \"%DURATION%\"
                  upstream: \"%UPSTREAM_HOST%\"
                  artifact_sha256: {sha}
          route_config:
            name: writ_route
            virtual_hosts:
            - name: upstream
              domains: [\"*\"]
{attempts}              routes:
{fallback_routes}              - match: {{ prefix: \"/\" }}
                route:
                  cluster: {UPSTREAM_CLUSTER}
                  # A provider behind a DNS name routes on Host: send its name, not ours.
                  auto_host_rewrite: true
                  # Model calls, streamed ones above all, take minutes; a stalled one ends
                  # after 60 s without a byte.
                  timeout: {route_timeout}s
                  idle_timeout: 60s
{local_reply}          http_filters:
{identity_filters}          - name: envoy.filters.http.wasm
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: writ
                root_id: \"\"
                # A VM failure never lets traffic through unchecked (see `writ envoy --help`).
                failure_policy: {failure}
                # The engine pauses in on_http_request_headers until the body is buffered.
                allow_on_headers_stop_iteration: true",
            version = env!("CARGO_PKG_VERSION"),
            policy = self.policy.as_deref().unwrap_or("(not a writ artifact)"),
            policy_yaml = yaml_str(self.policy.as_deref().unwrap_or("")),
            admin_host = self.admin_host,
            admin_port = self.admin_port,
            listen_host = self.listen_host,
            listen_port = self.listen_port,
            max = self.max_request_bytes,
            route_timeout = self.route_timeout_secs,
            attempts = if self.fallback_routes.is_empty() {
                ""
            } else {
                "              # The filter reads the router's attempt count for the audit record.\n              include_attempt_count_in_response: true\n"
            },
            fallback_routes = self.fallback_routes_yaml(),
            local_reply = self.local_reply_yaml(),
            identity_filters = self.identity_filters_yaml(),
            audit_log = self.audit_log_yaml(),
            tracing = self.tracing_yaml(),
        );
        // Deployment settings only: the policy itself is compiled into the artifact.
        let mut plugin = self.plugin_config.clone();
        if !self.clusters.is_empty() && !plugin.contains_key("clusters") {
            let mut clusters = serde_json::Map::new();
            for c in &self.clusters {
                clusters.insert(c.name.clone(), serde_json::Value::String(c.name.clone()));
            }
            plugin.insert("clusters".into(), clusters.into());
        }
        if self.audit_log.is_some() {
            plugin.insert("audit_filter_state".into(), true.into());
        }
        if self.policy.is_some() {
            plugin
                .entry("artifact_sha256")
                .or_insert_with(|| self.artifact_sha256.clone().into());
        }
        if !plugin.is_empty() {
            let json = serde_json::Value::Object(plugin).to_string();
            let _ = writeln!(
                y,
                "                configuration:
                  \"@type\": type.googleapis.com/google.protobuf.StringValue
                  value: {}",
                yaml_str(&json)
            );
        }
        let _ = writeln!(
            y,
            "                vm_config:
                  # One id per policy: every worker's VM shares the same shared data.
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
{code}          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:",
            code = self.code_yaml(),
        );
        self.write_cluster(
            &mut y,
            UPSTREAM_CLUSTER,
            &self.upstream_host,
            self.upstream_port,
            self.upstream_tls,
        );
        for c in &self.clusters {
            self.write_cluster(&mut y, &c.name, &c.host, c.port, false);
        }
        if let Some(JwtAuthn {
            jwks: Jwks::Remote {
                host, port, tls, ..
            },
            ..
        }) = &self.jwt
        {
            self.write_cluster(&mut y, JWKS_CLUSTER, host, *port, *tls);
        }
        if let Some(a) = &self.artifact_url {
            self.write_cluster(&mut y, ARTIFACT_CLUSTER, &a.host, a.port, a.tls);
        }
        if let Some(o) = &self.otlp {
            self.write_cluster(&mut y, OTLP_CLUSTER, &o.host, o.port, o.tls);
        }
        for (i, f) in self.fallback_routes.iter().enumerate() {
            let mut clusters = vec![UPSTREAM_CLUSTER.to_string()];
            clusters.extend(f.clusters.iter().map(|c| yaml_str(c)));
            let _ = writeln!(
                y,
                "  - name: {FALLBACK_CLUSTER}_{i}
    connect_timeout: 5s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: [{}]",
                clusters.join(", ")
            );
        }
        y.push_str(&stats_config_yaml());
        y
    }

    /// The connection manager's OpenTelemetry tracer: a SERVER span per request and, with
    /// `spawn_upstream_span`, a CLIENT span per upstream attempt, whose id Envoy sends
    /// upstream in `traceparent` (a client's `traceparent` is joined, its sampling kept).
    /// The GenAI attributes Envoy can know without reading the body are literal tags; the
    /// model, usage and guardrail events are in the filter's audit record, keyed by the
    /// `x-request-id` tagged here (`docs/observability.md`).
    fn tracing_yaml(&self) -> String {
        let Some(o) = &self.otlp else {
            return String::new();
        };
        let scheme = if o.tls { "https" } else { "http" };
        format!(
            "          # OpenTelemetry: Envoy's spans go to the OTLP/HTTP receiver, and the
          # upstream gets a `traceparent` naming Envoy's upstream span.
          tracing:
            spawn_upstream_span: true
            custom_tags:
            - tag: gen_ai.provider.name
              literal: {{ value: {provider} }}
            - tag: writ.artifact.sha256
              literal: {{ value: {sha} }}
            - tag: writ.request.id
              request_header: {{ name: x-request-id }}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: {service}
                http_service:
                  http_uri:
                    uri: {uri}
                    cluster: {OTLP_CLUSTER}
                    timeout: 5s
",
            provider = yaml_str(&o.provider_name),
            sha = self.artifact_sha256,
            service = yaml_str(&o.service_name),
            uri = yaml_str(&format!(
                "{scheme}://{}:{}/v1/traces",
                if o.host.contains(':') {
                    format!("[{}]", o.host)
                } else {
                    o.host.clone()
                },
                o.port
            )),
        )
    }

    /// The filters in front of the wasm filter: first `header_mutation`, removing the
    /// client's copies of the trusted headers (filters run in order, so no later filter,
    /// `jwt_authn` and the policy included, ever sees them); then `jwt_authn`, which
    /// refuses a missing or invalid token with 401 and sets each trusted header from a
    /// claim of the verified one.
    fn identity_filters_yaml(&self) -> String {
        let mut y = String::new();
        let mut strip = self.trusted_headers.clone();
        if let Some(jwt) = &self.jwt {
            for (h, _) in &jwt.claims {
                if !strip.contains(h) {
                    strip.push(h.clone());
                }
            }
        }
        if !strip.is_empty() {
            let _ = writeln!(
                y,
                "          # Identity headers are set by a verifier only: the client's copies go first.
          - name: envoy.filters.http.header_mutation
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations:"
            );
            for h in &strip {
                let _ = writeln!(y, "                - remove: {}", yaml_str(h));
            }
        }
        let Some(jwt) = &self.jwt else {
            return y;
        };
        let _ = writeln!(
            y,
            "          # A bearer JWT is required; its claims set the trusted identity headers.
          - name: envoy.filters.http.jwt_authn
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                {JWT_PROVIDER}:
                  issuer: {issuer}
                  audiences: [{audiences}]
                  # The token proves who the client is to the gateway; it is not the provider's.
                  forward: false
                  clock_skew_seconds: 60",
            issuer = yaml_str(&jwt.issuer),
            audiences = jwt
                .audiences
                .iter()
                .map(|a| yaml_str(a))
                .collect::<Vec<_>>()
                .join(", "),
        );
        match &jwt.jwks {
            Jwks::File(path) => {
                let _ = writeln!(
                    y,
                    "                  local_jwks:
                    filename: {}",
                    yaml_str(&path.display().to_string())
                );
            }
            Jwks::Remote { url, .. } => {
                let _ = writeln!(
                    y,
                    "                  remote_jwks:
                    http_uri:
                      uri: {}
                      cluster: {JWKS_CLUSTER}
                      timeout: 5s
                    cache_duration: 300s",
                    yaml_str(url)
                );
            }
        }
        if !jwt.claims.is_empty() {
            let _ = writeln!(y, "                  claim_to_headers:");
            for (h, c) in &jwt.claims {
                let _ = writeln!(
                    y,
                    "                  - {{ header_name: {}, claim_name: {} }}",
                    yaml_str(h),
                    yaml_str(c)
                );
            }
        }
        let _ = writeln!(y, "              rules:");
        for p in &jwt.exempt_paths {
            let _ = writeln!(y, "              - match: {{ path: {} }}", yaml_str(p));
        }
        let _ = writeln!(
            y,
            "              - match: {{ prefix: \"/\" }}
                requires: {{ provider_name: {JWT_PROVIDER} }}"
        );
        y
    }

    /// Envoy's own local replies (a codec error, a body or header block over its limits,
    /// an upstream that failed or timed out, a VM that failed) are plain text; these
    /// mappers turn each into the OpenAI-style error `writ serve` answers in the same case,
    /// with a fixed message. The engine's own replies carry the response-code details
    /// `writ_local_reply` and match the first mapper, which changes nothing (the first
    /// matching mapper wins). With a verifier, `jwt_authn`'s 401 keeps Envoy's reason in
    /// `code` (e.g. `jwt_authn_access_denied{Jwt_is_expired}`).
    fn local_reply_yaml(&self) -> String {
        let mapper = |expression: &str,
                      status: Option<u16>,
                      message: &str,
                      kind: &str,
                      code: &str| {
            let status = status.map_or(String::new(), |s| {
                format!("\n              status_code: {s}")
            });
            format!(
                "            - filter:
                extension_filter:
                  name: envoy.access_loggers.extension_filters.cel
                  typed_config:
                    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                    expression: \"{expression}\"{status}
              body_format_override:
                content_type: application/json
                json_format:
                  error:
                    message: \"{message}\"
                    type: {kind}
                    code: \"{code}\"
"
            )
        };
        let mut y = String::from(
            "          local_reply_config:
            mappers:
            - filter:
                extension_filter:
                  name: envoy.access_loggers.extension_filters.cel
                  typed_config:
                    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                    expression: \"response.code_details == 'writ_local_reply'\"
",
        );
        if self.jwt.is_some() {
            y.push_str(&mapper(
                "response.code_details.startsWith('jwt_authn')",
                None,
                "The bearer token is missing or not valid.",
                "authentication_error",
                "%RESPONSE_CODE_DETAILS%",
            ));
        }
        let own: [(&str, Option<u16>, &str, &str, &str); 10] = [
            (
                "response.code_details.startsWith('wasm')",
                Some(503),
                "The policy engine failed; the request was not forwarded.",
                "engine_error",
                "engine_error",
            ),
            (
                "response.code_details == 'response_payload_too_large'",
                Some(502),
                "The model provider's reply is too large to be checked.",
                "upstream_error",
                "reply_too_large",
            ),
            (
                "response.code == 413",
                None,
                "The request body exceeds the gateway's limit.",
                "invalid_request_error",
                "body_too_large",
            ),
            (
                "response.code == 431",
                None,
                "The request headers exceed the gateway's limit.",
                "invalid_request_error",
                "headers_too_large",
            ),
            (
                "response.code == 400",
                None,
                "The request is not valid HTTP.",
                "invalid_request_error",
                "bad_request",
            ),
            (
                "response.code == 408",
                None,
                "The request was not received in time.",
                "invalid_request_error",
                "request_timeout",
            ),
            (
                "response.code == 501",
                None,
                "The request uses an HTTP feature the gateway does not support.",
                "invalid_request_error",
                "not_implemented",
            ),
            (
                "response.code == 504",
                None,
                "The model provider did not answer in time.",
                "upstream_error",
                "upstream_timeout",
            ),
            (
                "response.code == 502 || response.code == 503",
                Some(502),
                "The model provider could not be reached.",
                "upstream_error",
                "upstream_unavailable",
            ),
            (
                "response.code >= 400",
                None,
                "The gateway refused the request.",
                "gateway_error",
                "gateway_error",
            ),
        ];
        for (expression, status, message, kind, code) in own {
            y.push_str(&mapper(expression, status, message, kind, code));
        }
        y
    }

    /// The file access log that writes the audit records: the filter leaves each request's
    /// chained lines in filter state `wasm.writ_audit` from its `on_log` (Envoy runs filter
    /// log handlers before the connection manager's access logs), and this log writes them
    /// as they are. Streams the filter never saw (a 413 before it ran) carry none and are
    /// skipped, so the file holds only records.
    fn audit_log_yaml(&self) -> String {
        let Some(path) = &self.audit_log else {
            return String::new();
        };
        format!(
            "          # Audit records, hash-chained, one per line, whatever the log level.
          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                text_format_source:
                  inline_string: \"%FILTER_STATE(wasm.writ_audit:PLAIN)%\\n\"
            filter:
              extension_filter:
                name: envoy.access_loggers.extension_filters.cel
                typed_config:
                  \"@type\": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                  expression: \"'wasm.writ_audit' in filter_state\"
",
            yaml_str(&path.display().to_string())
        )
    }

    /// The `vm_config.code` block. With an artifact URL Envoy itself verifies the module: a
    /// `remote` data source has a required `sha256`, and Envoy refuses fetched bytes whose
    /// hash differs. A `local` file has no hash check in Envoy; `writ envoy` verified it
    /// when it wrote this config (see `docs/security.md`, "Artifacts").
    fn code_yaml(&self) -> String {
        let sha = &self.artifact_sha256;
        match &self.artifact_url {
            None => format!(
                "                  # Envoy does not hash a local file: what `writ envoy` verified was
                  # sha256 {sha}; pin it with --artifact-url.
                  code:
                    local:
                      filename: {}
",
                yaml_str(&self.artifact.display().to_string())
            ),
            Some(a) => format!(
                "                  # Envoy fetches the module and refuses it unless its sha256 is exactly this.
                  code:
                    remote:
                      http_uri:
                        uri: {uri}
                        cluster: {ARTIFACT_CLUSTER}
                        timeout: 30s
                      sha256: {sha}
                      retry_policy:
                        num_retries: {retries}
                        retry_back_off: {{ base_interval: 0.5s, max_interval: 5s }}
",
                uri = yaml_str(&a.url),
                retries = self.artifact_fetch_retries,
            ),
        }
    }

    /// The routes of [`EnvoyConfig::fallback_routes`], before the default route: each
    /// sends its workflow's requests to its aggregate cluster, and retries a failure once
    /// per fallback cluster, each retry to the next cluster (`previous_priorities`: the
    /// aggregate puts each cluster at the next priority, and a retry skips those tried).
    fn fallback_routes_yaml(&self) -> String {
        let mut y = String::new();
        for (i, f) in self.fallback_routes.iter().enumerate() {
            let statuses = if f.statuses.is_empty() {
                String::new()
            } else {
                let s: Vec<String> = f.statuses.iter().map(u16::to_string).collect();
                format!(
                    "                    retriable_status_codes: [{}]\n",
                    s.join(", ")
                )
            };
            let _ = write!(
                y,
                "              # Workflow fallback: {header} == {value}, then {chain}.
              - match:
                  prefix: \"/\"
                  headers:
                  - name: {header_yaml}
                    string_match: {{ exact: {value_yaml} }}
                route:
                  cluster: {FALLBACK_CLUSTER}_{i}
                  auto_host_rewrite: true
                  timeout: {timeout}s
                  idle_timeout: 60s
                  retry_policy:
                    retry_on: {retry_on}
                    num_retries: {n}
{statuses}                    retry_priority:
                      name: envoy.retry_priorities.previous_priorities
                      typed_config:
                        \"@type\": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
                        update_frequency: 1
",
                header = f.header.replace('\n', " "),
                value = f.value.replace('\n', " "),
                chain = f.clusters.join(", ").replace('\n', " "),
                header_yaml = yaml_str(&f.header),
                value_yaml = yaml_str(&f.value),
                timeout = self.route_timeout_secs,
                retry_on = yaml_str(&f.retry_on.join(",")),
                n = f.clusters.len(),
            );
        }
        y
    }

    fn write_cluster(&self, y: &mut String, name: &str, host: &str, port: u16, tls: bool) {
        let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
            "STATIC"
        } else {
            "STRICT_DNS"
        };
        let _ = writeln!(
            y,
            "  - name: {name}
    type: {discovery}
    connect_timeout: 5s
    per_connection_buffer_limit_bytes: {max}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {host}, port_value: {port} }}",
            host = yaml_str(host),
            max = self.max_request_bytes,
        );
        if tls {
            // Without a validation context Envoy accepts any certificate: prompts would go to
            // whoever answers. Verify the chain and that the certificate names this host.
            let san_type = if host.parse::<std::net::IpAddr>().is_ok() {
                "IP_ADDRESS"
            } else {
                "DNS"
            };
            let _ = writeln!(
                y,
                "    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {host}
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: {ca} }}
            match_typed_subject_alt_names:
            - san_type: {san_type}
              matcher: {{ exact: {host} }}",
                host = yaml_str(host),
                ca = yaml_str(&self.upstream_ca.display().to_string()),
            );
        }
    }
}

/// Where Debian, Ubuntu and Alpine keep the system's CA bundle (Envoy ships none).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The prefix of the aggregate clusters of [`EnvoyConfig::fallback_routes`].
const FALLBACK_CLUSTER: &str = "writ_fallback";

/// The cluster every route goes to.
const UPSTREAM_CLUSTER: &str = "upstream";

/// The cluster Envoy fetches the artifact through, with `--artifact-url`.
const ARTIFACT_CLUSTER: &str = "writ_artifact";

/// The top-level `stats_config`: one `stats_tags` regex per label writ's metrics carry,
/// so Envoy's `/stats/prometheus` shows `writ_decisions_total{clause="AIP-1.2",…}` for
/// the stat `writ_decisions_total;clause=AIP-1.2;…` (the label convention of
/// `writ_plugin::metrics`, `docs/metrics.md`). Each regex only reads writ's wasm stats.
fn stats_config_yaml() -> String {
    let mut y = String::from(
        "# writ's metrics carry labels in the stat name (`family;label=value`, docs/metrics.md).
stats_config:
  stats_tags:
",
    );
    for name in writ_plugin::metrics::label_names() {
        let _ = writeln!(
            y,
            "  - tag_name: {name}\n    regex: {}",
            yaml_str(&writ_plugin::metrics::envoy_tag_regex(name))
        );
    }
    y
}

/// The cluster of the OTLP receiver, with `--otlp`.
const OTLP_CLUSTER: &str = "writ_otlp";

/// Derives the VM id from the artifact's name, `<policy>-<version>.wasm`: the policy name, so
/// versions of one policy share data and different policies never do.
fn vm_id_for(artifact: &Path) -> String {
    let stem = artifact
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The version starts at the first `-` followed by `digits.`, as in `name-1.3.0-rc.1`.
    let name = stem
        .match_indices('-')
        .map(|(i, _)| i)
        .find(|&i| {
            let rest = &stem[i + 1..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with('.')
        })
        .map_or(stem.as_str(), |i| &stem[..i]);
    format!("writ.{name}")
}

/// The JSON of the artifact's `writ.manifest` custom section, if it has one. Read here with
/// a few lines of wasm section walking, so the generator needs no wasm parser.
fn embedded_manifest(wasm: &[u8]) -> Option<serde_json::Value> {
    let mut rest = wasm.get(8..)?; // magic + version
    while !rest.is_empty() {
        let (&id, after_id) = rest.split_first()?;
        let (size, after_size) = leb128_u32(after_id)?;
        let body = after_size.get(..size as usize)?;
        rest = after_size.get(size as usize..)?;
        if id == 0 {
            let (name_len, after_len) = leb128_u32(body)?;
            let name = after_len.get(..name_len as usize)?;
            if name == b"writ.manifest" {
                return serde_json::from_slice(after_len.get(name_len as usize..)?).ok();
            }
        }
    }
    None
}

/// Decodes an unsigned LEB128 u32, returning it and the bytes after it.
fn leb128_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// Reads the upstream as `HOST:PORT` (TLS when the port is 443) or as a URL,
/// `http://HOST[:PORT]` or `https://HOST[:PORT]`, the form `writ serve` takes.
fn parse_upstream(upstream: &str) -> Result<(String, u16, bool), EnvoyConfigError> {
    let bad = || EnvoyConfigError::Address(upstream.to_string());
    let (rest, tls, default_port) = if let Some(rest) = upstream.strip_prefix("https://") {
        (rest, true, 443)
    } else if let Some(rest) = upstream.strip_prefix("http://") {
        (rest, false, 80)
    } else {
        let (host, port) = parse_host_port(upstream)?;
        return Ok((host, port, port == 443));
    };
    // Envoy forwards the client's path as is; a base path would need a rewrite, so refuse it.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(bad());
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    if has_port {
        let (host, port) = parse_host_port(authority).map_err(|_| bad())?;
        Ok((host, port, tls))
    } else {
        let (host, port) =
            parse_host_port(&format!("{authority}:{default_port}")).map_err(|_| bad())?;
        Ok((host, port, tls))
    }
}

/// Splits `HOST:PORT` (or `[IPv6]:PORT`).
fn parse_host_port(addr: &str) -> Result<(String, u16), EnvoyConfigError> {
    let bad = || EnvoyConfigError::Address(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => (inner, true),
        None => (host, false),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    // Only a bracketed IPv6 address may contain `:`; no host contains `/` or spaces.
    let stray = |c: char| c == '/' || c.is_whitespace() || (c == ':' && !bracketed);
    if host.is_empty() || host.contains(stray) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_id_is_the_policy_name_without_version() {
        assert_eq!(
            vm_id_for(Path::new("/a/support-assistant-1.3.0.wasm")),
            "writ.support-assistant"
        );
        assert_eq!(vm_id_for(Path::new("x-2-1.0.0-rc.1.wasm")), "writ.x-2");
        assert_eq!(vm_id_for(Path::new("plain.wasm")), "writ.plain");
    }

    #[test]
    fn reads_the_embedded_manifest() {
        let json = br#"{"policy":"p","version":"1.2.3"}"#;
        let name = b"writ.manifest";
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name);
        section.extend_from_slice(json);
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&[1, 1, 0]); // an unrelated (type) section
        wasm.push(0);
        wasm.push(section.len() as u8);
        wasm.extend_from_slice(&section);
        let m = embedded_manifest(&wasm).map(|m| m["policy"].clone());
        assert_eq!(m, Some(serde_json::json!("p")));
        assert!(embedded_manifest(b"\0asm\x01\0\0\0").is_none());
        assert!(embedded_manifest(&wasm[..wasm.len() - 3]).is_none());
    }

    #[test]
    fn upstreams_parse_as_address_or_url() {
        let parse = |s: &str| parse_upstream(s).ok();
        let up = |h: &str, p, tls| Some((h.to_string(), p, tls));
        assert_eq!(parse("127.0.0.1:8000"), up("127.0.0.1", 8000, false));
        assert_eq!(parse("api.openai.com:443"), up("api.openai.com", 443, true));
        assert_eq!(
            parse("https://api.openai.com"),
            up("api.openai.com", 443, true)
        );
        assert_eq!(
            parse("https://api.openai.com/"),
            up("api.openai.com", 443, true)
        );
        assert_eq!(parse("http://127.0.0.1:8000"), up("127.0.0.1", 8000, false));
        assert_eq!(parse("http://localhost"), up("localhost", 80, false));
        assert_eq!(parse("https://[::1]:8443"), up("::1", 8443, true));
        assert_eq!(parse("https://[::1]"), up("::1", 443, true));
        assert_eq!(parse("https://h.example/v1"), None);
        assert_eq!(parse("ftp://h:1"), None);
    }

    #[test]
    fn artifact_urls_parse() {
        let parse = |s: &str| ArtifactUrl::parse(s).ok().map(|a| (a.host, a.port, a.tls));
        assert_eq!(
            parse("https://artifacts.example.com/p/a.wasm"),
            Some(("artifacts.example.com".to_string(), 443, true))
        );
        assert_eq!(
            parse("http://127.0.0.1:8080/a.wasm"),
            Some(("127.0.0.1".to_string(), 8080, false))
        );
        assert_eq!(parse("http://127.0.0.1:8080/"), None);
        assert_eq!(parse("http://127.0.0.1:8080"), None);
        assert_eq!(parse("ftp://h/a.wasm"), None);
    }

    #[test]
    fn otlp_receivers_parse() {
        let parse = |s: &str| OtlpTracing::parse(s).ok().map(|o| (o.host, o.port, o.tls));
        assert_eq!(
            parse("127.0.0.1:4318"),
            Some(("127.0.0.1".to_string(), 4318, false))
        );
        assert_eq!(
            parse("https://otel.example.com"),
            Some(("otel.example.com".to_string(), 443, true))
        );
        assert_eq!(parse("http://127.0.0.1:4318/v1/traces"), None);
        assert_eq!(parse("nohost"), None);
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_host_port("127.0.0.1:8080").ok(),
            Some(("127.0.0.1".to_string(), 8080))
        );
        assert_eq!(
            parse_host_port("[::1]:80").ok(),
            Some(("::1".to_string(), 80))
        );
        assert!(parse_host_port("nohost").is_err());
        assert!(parse_host_port(":80").is_err());
        assert!(parse_host_port("h:99999").is_err());
    }
}
