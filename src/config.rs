//! Typed configuration: built-in defaults, then `config/default.yaml` and
//! `config/local.yaml` (or the `-c` file or directory), then `NVECD__SECTION__KEY`
//! environment variables, deserialised into `#[serde(deny_unknown_fields)]`
//! structs and checked by `validate()`. Unknown keys and bad values stop the
//! start with a message naming the key.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::store::{Metric, StoreConfig};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file or directory not found: {0}")]
    NotFound(PathBuf),
    #[error("no configuration file found in directory {0} (expected default.yaml)")]
    EmptyDir(PathBuf),
    #[error("invalid configuration: {0}")]
    Load(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub events: EventsConfig,
    pub vectors: VectorsConfig,
    pub similarity: SimilarityConfig,
    pub snapshot: SnapshotConfig,
    pub security: SecurityConfig,
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub tcp: TcpConfig,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    /// Seconds a connection may go without delivering a complete request line
    /// (counted from its last request or reply) before it is closed; also the
    /// write stall timeout. 0 = never close idle clients.
    pub idle_timeout_sec: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    pub bind: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub ctx_buffer_size: usize,
    pub dedup_window_sec: u64,
    pub dedup_cache_size: usize,
    pub decay_interval_sec: u64,
    pub decay_alpha: f64,
    /// Extension: threads that make the co-occurrence writes of a run of
    /// pipelined EVENTs (2 = the store's thread and one more on a machine
    /// with two cores or more, 1 = the store's thread alone).
    pub write_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsConfig {
    pub default_dimension: usize,
    pub distance_metric: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarityConfig {
    pub max_top_k: usize,
    pub fusion_alpha: f64,
    pub fusion_beta: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub dir: PathBuf,
    pub interval_sec: u64,
    pub retain: usize,
    pub restore_on_start: bool,
    /// Extension: write a final auto snapshot on SIGTERM/SIGINT.
    pub save_on_shutdown: bool,
    /// Extension: threads that encode a save's co-occurrence records
    /// (1 = the saving thread alone, 0 = one per core, at most 4).
    pub save_threads: usize,
    /// Extension: after a LOAD, fault in this share (in %) of the store's
    /// memory for the next SAVE's copy-on-write copies (0 = none).
    pub cow_reserve_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub requirepass: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: String,
    pub json: bool,
}

impl Default for Config {
    /// The built-in defaults of SPEC section 6.
    fn default() -> Self {
        Config {
            api: ApiConfig {
                tcp: TcpConfig {
                    bind: "127.0.0.1".into(),
                    port: 11017,
                },
                max_request_bytes: 16 * 1024 * 1024,
                max_connections: 1000,
                idle_timeout_sec: 300,
            },
            events: EventsConfig {
                ctx_buffer_size: 50,
                dedup_window_sec: 60,
                dedup_cache_size: 10_000,
                decay_interval_sec: 3600,
                decay_alpha: 0.99,
                write_threads: 2,
            },
            vectors: VectorsConfig {
                default_dimension: 0,
                distance_metric: "cosine".into(),
            },
            similarity: SimilarityConfig {
                max_top_k: 1000,
                fusion_alpha: 0.6,
                fusion_beta: 0.4,
            },
            snapshot: SnapshotConfig {
                dir: PathBuf::from("./data/snapshots"),
                interval_sec: 0,
                retain: 3,
                restore_on_start: false,
                save_on_shutdown: false,
                save_threads: 1,
                cow_reserve_percent: 50,
            },
            security: SecurityConfig {
                requirepass: String::new(),
            },
            logging: LoggingConfig {
                level: "info".into(),
                json: false,
            },
        }
    }
}

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `config/` of the working directory (default.yaml, then local.yaml); a
    /// missing directory means built-in defaults only.
    WorkingDir,
    /// `-c <file or dir>`: on top of the built-in defaults.
    Path(PathBuf),
}

impl Config {
    /// Loads and validates, taking `NVECD__*` variables from the process environment.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_with_env(source, None)
    }

    /// As `load`, with an explicit environment (tests); `None` reads the process's.
    pub fn load_with_env(
        source: &ConfigSource,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let defaults =
            config::Config::try_from(&Config::default()).map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        for file in config_files(source)? {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Yaml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("NVECD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        let cfg: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        if self.api.tcp.bind.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "api.tcp.bind",
                format!("{:?} is not an IP address", self.api.tcp.bind),
            );
        }
        if self.api.max_request_bytes < 64 {
            return bad("api.max_request_bytes", "must be at least 64");
        }
        if self.api.max_connections == 0 {
            return bad("api.max_connections", "must be at least 1");
        }
        if self.events.ctx_buffer_size == 0 {
            return bad("events.ctx_buffer_size", "must be at least 1");
        }
        if !(self.events.decay_alpha > 0.0 && self.events.decay_alpha <= 1.0) {
            return bad("events.decay_alpha", "must be in (0, 1]");
        }
        if !(1..=2).contains(&self.events.write_threads) {
            return bad("events.write_threads", "must be 1 or 2");
        }
        if self.metric().is_none() {
            return bad(
                "vectors.distance_metric",
                format!("{:?} (must be cosine, dot, or l2)", self.vectors.distance_metric),
            );
        }
        if self.similarity.max_top_k == 0 {
            return bad("similarity.max_top_k", "must be at least 1");
        }
        for (key, v) in [
            ("similarity.fusion_alpha", self.similarity.fusion_alpha),
            ("similarity.fusion_beta", self.similarity.fusion_beta),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, "must be a finite number >= 0");
            }
        }
        if self.snapshot.dir.as_os_str().is_empty() {
            return bad("snapshot.dir", "must not be empty");
        }
        if self.snapshot.retain == 0 {
            return bad("snapshot.retain", "must be at least 1");
        }
        if self.snapshot.save_threads > 64 {
            return bad("snapshot.save_threads", "must be between 0 and 64");
        }
        if self.snapshot.cow_reserve_percent > 100 {
            return bad("snapshot.cow_reserve_percent", "must be between 0 and 100");
        }
        if !matches!(
            self.logging.level.to_ascii_lowercase().as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "off"
        ) {
            return bad(
                "logging.level",
                format!(
                    "{:?} (must be trace, debug, info, warn, error, or off)",
                    self.logging.level
                ),
            );
        }
        Ok(())
    }

    /// `vectors.distance_metric` as a `Metric` (None when invalid).
    pub fn metric(&self) -> Option<Metric> {
        match self.vectors.distance_metric.to_ascii_lowercase().as_str() {
            "cosine" => Some(Metric::Cosine),
            "dot" => Some(Metric::Dot),
            "l2" => Some(Metric::L2),
            _ => None,
        }
    }

    /// What the stores need.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            ctx_buffer_size: self.events.ctx_buffer_size,
            dedup_window_sec: self.events.dedup_window_sec,
            dedup_cache_size: self.events.dedup_cache_size,
            default_dimension: self.vectors.default_dimension,
            distance_metric: self.metric().unwrap_or(Metric::Cosine),
            max_top_k: self.similarity.max_top_k,
            fusion_alpha: self.similarity.fusion_alpha as f32,
            fusion_beta: self.similarity.fusion_beta as f32,
            write_threads: self.events.write_threads,
        }
    }

    /// Every key as `key.path: value`, in file order, `requirepass` masked
    /// (CONFIG SHOW). `section` limits it to one top-level section.
    pub fn entries(&self, section: Option<&str>) -> Option<Vec<(String, String)>> {
        let pass = if self.security.requirepass.is_empty() {
            ""
        } else {
            "********"
        };
        let all: Vec<(&str, String)> = vec![
            ("api.tcp.bind", self.api.tcp.bind.clone()),
            ("api.tcp.port", self.api.tcp.port.to_string()),
            ("api.max_request_bytes", self.api.max_request_bytes.to_string()),
            ("api.max_connections", self.api.max_connections.to_string()),
            ("api.idle_timeout_sec", self.api.idle_timeout_sec.to_string()),
            ("events.ctx_buffer_size", self.events.ctx_buffer_size.to_string()),
            (
                "events.dedup_window_sec",
                self.events.dedup_window_sec.to_string(),
            ),
            (
                "events.dedup_cache_size",
                self.events.dedup_cache_size.to_string(),
            ),
            (
                "events.decay_interval_sec",
                self.events.decay_interval_sec.to_string(),
            ),
            ("events.decay_alpha", self.events.decay_alpha.to_string()),
            ("events.write_threads", self.events.write_threads.to_string()),
            (
                "vectors.default_dimension",
                self.vectors.default_dimension.to_string(),
            ),
            ("vectors.distance_metric", self.vectors.distance_metric.clone()),
            ("similarity.max_top_k", self.similarity.max_top_k.to_string()),
            (
                "similarity.fusion_alpha",
                self.similarity.fusion_alpha.to_string(),
            ),
            ("similarity.fusion_beta", self.similarity.fusion_beta.to_string()),
            ("snapshot.dir", self.snapshot.dir.display().to_string()),
            ("snapshot.interval_sec", self.snapshot.interval_sec.to_string()),
            ("snapshot.retain", self.snapshot.retain.to_string()),
            (
                "snapshot.restore_on_start",
                self.snapshot.restore_on_start.to_string(),
            ),
            (
                "snapshot.save_on_shutdown",
                self.snapshot.save_on_shutdown.to_string(),
            ),
            ("snapshot.save_threads", self.snapshot.save_threads.to_string()),
            (
                "snapshot.cow_reserve_percent",
                self.snapshot.cow_reserve_percent.to_string(),
            ),
            ("security.requirepass", pass.to_string()),
            ("logging.level", self.logging.level.clone()),
            ("logging.json", self.logging.json.to_string()),
        ];
        let wanted: Vec<(String, String)> = all
            .into_iter()
            .filter(|(k, _)| match section {
                None => true,
                Some(s) => k.split('.').next() == Some(s),
            })
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if wanted.is_empty() {
            None
        } else {
            Some(wanted)
        }
    }
}

fn config_files(source: &ConfigSource) -> Result<Vec<PathBuf>, ConfigError> {
    let dir_files = |dir: &Path| -> Vec<PathBuf> {
        ["default.yaml", "local.yaml"]
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.is_file())
            .collect()
    };
    match source {
        ConfigSource::WorkingDir => Ok(dir_files(Path::new("config"))),
        ConfigSource::Path(p) if p.is_dir() => {
            let files = dir_files(p);
            if files.is_empty() {
                Err(ConfigError::EmptyDir(p.clone()))
            } else {
                Ok(files)
            }
        }
        ConfigSource::Path(p) if p.is_file() => Ok(vec![p.clone()]),
        ConfigSource::Path(p) => Err(ConfigError::NotFound(p.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(path: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with_env(&ConfigSource::Path(path.to_path_buf()), Some(env))
    }

    #[test]
    fn shipped_default_yaml_equals_builtin_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.yaml");
        assert_eq!(load(&p, &[]).unwrap(), Config::default());
    }

    #[test]
    fn file_values_override_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.yaml",
            "snapshot:\n  interval_sec: 10\napi:\n  tcp:\n    port: 0\n",
        );
        let cfg = load(&p, &[("NVECD__SNAPSHOT__INTERVAL_SEC", "60")]).unwrap();
        assert_eq!(cfg.snapshot.interval_sec, 60);
        assert_eq!(cfg.api.tcp.port, 0);
        assert_eq!(cfg.snapshot.retain, 3);
    }

    #[test]
    fn directory_reads_default_then_local() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "default.yaml",
            "events:\n  ctx_buffer_size: 7\n  decay_alpha: 0.5\n",
        );
        write(dir.path(), "local.yaml", "events:\n  ctx_buffer_size: 9\n");
        let cfg = load(dir.path(), &[]).unwrap();
        assert_eq!(cfg.events.ctx_buffer_size, 9);
        assert_eq!(cfg.events.decay_alpha, 0.5);
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.yaml", "api:\n  tcp:\n    prot: 1\n");
        let err = load(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = load(&p.with_file_name("none.yaml"), &[]).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        let p = write(dir.path(), "d.yaml", "snapshots:\n  dir: x\n");
        let err = load(&p, &[]).unwrap_err().to_string();
        assert!(err.contains("snapshots"), "{err}");
    }

    #[test]
    fn unknown_environment_key_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.yaml", "{}\n");
        let err = load(&p, &[("NVECD__SNAPSHOT__INTERVAL", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("interval"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for (yaml, key) in [
            (
                "vectors:\n  distance_metric: manhattan\n",
                "vectors.distance_metric",
            ),
            ("events:\n  decay_alpha: 1.5\n", "events.decay_alpha"),
            ("events:\n  write_threads: 0\n", "events.write_threads"),
            ("events:\n  write_threads: 3\n", "events.write_threads"),
            ("snapshot:\n  retain: 0\n", "snapshot.retain"),
            ("snapshot:\n  save_threads: 65\n", "snapshot.save_threads"),
            (
                "snapshot:\n  cow_reserve_percent: 101\n",
                "snapshot.cow_reserve_percent",
            ),
            ("snapshot:\n  cow_reserve_percent: -1\n", "cow_reserve_percent"),
            ("api:\n  tcp:\n    bind: nowhere\n", "api.tcp.bind"),
            ("api:\n  tcp:\n    port: 70000\n", "port"),
            ("snapshot:\n  interval_sec: soon\n", "interval_sec"),
        ] {
            let p = write(dir.path(), "c.yaml", yaml);
            let err = load(&p, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn config_show_masks_the_password_and_filters_sections() {
        let mut cfg = Config::default();
        cfg.security.requirepass = "secret".into();
        let all = cfg.entries(None).unwrap();
        assert!(all.iter().all(|(_, v)| v != "secret"));
        let snap = cfg.entries(Some("snapshot")).unwrap();
        assert_eq!(snap.len(), 7);
        assert!(cfg.entries(Some("nope")).is_none());
    }
}
