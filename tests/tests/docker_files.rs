//! `docker/`: what can be checked without a Docker engine. The compose file parses; every path
//! it references (build context, Dockerfile, the Dockerfile's COPY sources, mounted files)
//! exists; the ports it publishes and the Dockerfile exposes are the ones `docker/evshift.toml`
//! listens on, and Prometheus scrapes that metrics port; the configuration names the compose
//! services, with their databases and credentials, as hosts; and the real `evshift` binary
//! accepts that configuration with `--check-config` (which parses and validates only: it
//! neither resolves the host names nor connects).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use evshift_tests::evshift_binary;
use serde::Deserialize;
use tokio_postgres::config::Host;

/// The Postgres port inside every store container.
const POSTGRES_PORT: u16 = 5432;

/// The subset of a compose file these checks read; other keys are ignored.
#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    volumes: BTreeMap<String, Option<serde_yaml::Value>>,
}

/// One compose service (the keys the checks read).
#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    depends_on: DependsOn,
}

/// `build:` of a service.
#[derive(Debug, Deserialize)]
struct Build {
    context: String,
    dockerfile: Option<String>,
}

/// `depends_on:` in either of its compose forms.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    #[default]
    None,
    List(Vec<String>),
    Map(BTreeMap<String, serde_yaml::Value>),
}

impl DependsOn {
    fn names(&self) -> Vec<String> {
        match self {
            DependsOn::None => Vec::new(),
            DependsOn::List(names) => names.clone(),
            DependsOn::Map(map) => map.keys().cloned().collect(),
        }
    }
}

/// A `SOURCE:TARGET[:MODE]` entry of a service's `volumes:`.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
}

impl Mount {
    fn parse(entry: &str) -> Mount {
        let mut parts = entry.split(':');
        let source = parts.next().unwrap_or_default().to_string();
        let target = parts
            .next()
            .unwrap_or_else(|| panic!("volume {entry:?} has no target"))
            .to_string();
        Mount { source, target }
    }

    /// A bind mount of a file or directory of the repository, as opposed to a named volume.
    fn is_bind(&self) -> bool {
        self.source.starts_with('.') || self.source.starts_with('/')
    }
}

/// A `[HOST_IP:]HOST_PORT:CONTAINER_PORT` entry of a service's `ports:`.
#[derive(Debug)]
struct PortMapping {
    host: u16,
    container: u16,
}

impl PortMapping {
    fn parse(entry: &str) -> PortMapping {
        let parts: Vec<&str> = entry.split(':').collect();
        let port = |text: &str| -> u16 {
            text.parse()
                .unwrap_or_else(|_| panic!("port mapping {entry:?}: {text:?} is not a port"))
        };
        match parts.as_slice() {
            [host, container] | [_, host, container] => PortMapping {
                host: port(host),
                container: port(container),
            },
            _ => panic!("port mapping {entry:?} is not [IP:]HOST:CONTAINER"),
        }
    }
}

/// The keys of `docker/evshift.toml` these checks read.
#[derive(Debug, Deserialize)]
struct EvshiftToml {
    listen: String,
    metrics_listen: String,
    control: ControlSection,
    stores: Vec<StoreSection>,
}

#[derive(Debug, Deserialize)]
struct ControlSection {
    url: String,
}

#[derive(Debug, Deserialize)]
struct StoreSection {
    id: String,
    url: String,
}

/// The keys of `docker/prometheus.yml` these checks read.
#[derive(Debug, Deserialize)]
struct Prometheus {
    #[serde(default)]
    rule_files: Vec<String>,
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    job_name: String,
    #[serde(default)]
    metrics_path: Option<String>,
    static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Deserialize)]
struct StaticConfig {
    targets: Vec<String>,
}

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn docker_dir() -> PathBuf {
    repo_root().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Compose {
    let text = read(&docker_dir().join("docker-compose.yml"));
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    // Compose resolves `<<:` merge keys (the shared Postgres settings); serde_yaml leaves them.
    value.apply_merge().expect("merge keys resolve");
    serde_yaml::from_value(value).expect("docker-compose.yml has the compose structure")
}

fn service<'a>(compose: &'a Compose, name: &str) -> &'a Service {
    compose
        .services
        .get(name)
        .unwrap_or_else(|| panic!("no service {name:?} in docker-compose.yml"))
}

fn evshift_toml() -> EvshiftToml {
    toml::from_str(&read(&docker_dir().join("evshift.toml")))
        .expect("docker/evshift.toml has listen, metrics_listen, [control] and [[stores]]")
}

fn prometheus() -> Prometheus {
    serde_yaml::from_str(&read(&docker_dir().join("prometheus.yml")))
        .expect("docker/prometheus.yml is a Prometheus configuration")
}

/// The service that builds evshift from the Dockerfile.
fn evshift_service(compose: &Compose) -> (&str, &Service) {
    let built: Vec<_> = compose
        .services
        .iter()
        .filter(|(_, s)| s.build.is_some())
        .collect();
    assert_eq!(built.len(), 1, "exactly one service is built: {built:?}");
    (built[0].0.as_str(), built[0].1)
}

/// The Dockerfile the evshift service is built from, and its build context.
fn dockerfile_of(service: &Service) -> (PathBuf, PathBuf) {
    let build = service.build.as_ref().expect("a build section");
    let context = docker_dir().join(&build.context);
    let dockerfile = context.join(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
    (context, dockerfile)
}

fn instructions(dockerfile: &Path) -> Vec<Instruction> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in read(dockerfile).lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|text| {
            let (keyword, arguments) = text.split_once(' ').unwrap_or((&text, ""));
            Instruction {
                keyword: keyword.to_ascii_uppercase(),
                arguments: arguments.trim().to_string(),
            }
        })
        .collect()
}

/// The instructions of the last stage: what the runtime image is made of.
fn final_stage(instructions: &[Instruction]) -> &[Instruction] {
    let start = instructions
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM instruction");
    &instructions[start..]
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} is not HOST:PORT"))
}

fn postgres_config(url: &str) -> tokio_postgres::Config {
    tokio_postgres::Config::from_str(url).unwrap_or_else(|e| panic!("url {url:?}: {e}"))
}

#[test]
fn the_compose_file_parses_and_its_references_resolve() {
    let compose = compose();
    for (name, service) in &compose.services {
        assert!(
            service.image.is_some() || service.build.is_some(),
            "service {name} has neither image nor build"
        );
        for dependency in service.depends_on.names() {
            assert!(
                compose.services.contains_key(&dependency),
                "service {name} depends on unknown service {dependency}"
            );
        }
        for mount in service.volumes.iter().map(|v| Mount::parse(v)) {
            if !mount.is_bind() {
                assert!(
                    compose.volumes.contains_key(&mount.source),
                    "service {name} uses undeclared volume {}",
                    mount.source
                );
            }
        }
    }
    for (name, service) in &compose.services {
        for mapping in service.ports.iter().map(|p| PortMapping::parse(p)) {
            assert!(
                mapping.host > 0 && mapping.container > 0,
                "service {name}: {mapping:?}"
            );
        }
    }
}

#[test]
fn every_path_the_compose_file_references_exists() {
    let compose = compose();
    let (_, evshift) = evshift_service(&compose);
    let (context, dockerfile) = dockerfile_of(evshift);
    assert!(
        context.is_dir(),
        "build context {} is no directory",
        context.display()
    );
    assert!(
        dockerfile.is_file(),
        "no Dockerfile at {}",
        dockerfile.display()
    );
    for (name, service) in &compose.services {
        for mount in service.volumes.iter().map(|v| Mount::parse(v)) {
            if mount.is_bind() {
                let source = docker_dir().join(&mount.source);
                assert!(
                    source.exists(),
                    "service {name} mounts {} ({}), which does not exist",
                    mount.source,
                    source.display()
                );
            }
        }
    }
    // What the build copies from the context must be there, and not left out of the context by
    // the Dockerfile's ignore file (everything excluded, then the copied paths let back in).
    let ignore = read(&dockerfile.with_file_name("Dockerfile.dockerignore"));
    let let_back: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    for instruction in instructions(&dockerfile) {
        if instruction.keyword != "COPY" || instruction.arguments.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = instruction.arguments.split_whitespace().collect();
        let (_, sources) = words.split_last().expect("COPY has a destination");
        for source in sources {
            assert!(
                context.join(source).exists(),
                "the Dockerfile copies {source}, which is not in the build context {}",
                context.display()
            );
            assert!(
                let_back.contains(source.trim_end_matches('/')),
                "the Dockerfile copies {source}, which Dockerfile.dockerignore leaves out"
            );
        }
    }
}

#[test]
fn published_and_exposed_ports_are_the_ones_evshift_listens_on() {
    let compose = compose();
    let config = evshift_toml();
    let listen = port_of(&config.listen);
    let metrics = port_of(&config.metrics_listen);
    let (name, evshift) = evshift_service(&compose);

    let published: BTreeSet<u16> = evshift
        .ports
        .iter()
        .map(|p| PortMapping::parse(p).container)
        .collect();
    assert_eq!(
        published,
        BTreeSet::from([listen, metrics]),
        "ports of {name}"
    );

    let (_, dockerfile) = dockerfile_of(evshift);
    let exposed: BTreeSet<u16> = instructions(&dockerfile)
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.arguments.split_whitespace().map(str::to_string))
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .expect("EXPOSE takes ports")
        })
        .collect();
    assert_eq!(exposed, BTreeSet::from([listen, metrics]), "EXPOSE");

    // Prometheus scrapes exactly that metrics port of the evshift service.
    let prometheus = prometheus();
    let jobs: Vec<&ScrapeConfig> = prometheus
        .scrape_configs
        .iter()
        .filter(|job| {
            job.static_configs
                .iter()
                .flat_map(|c| &c.targets)
                .any(|t| t.starts_with(&format!("{name}:")))
        })
        .collect();
    assert_eq!(jobs.len(), 1, "one scrape job for {name}: {jobs:?}");
    let job = jobs[0];
    assert_eq!(
        job.metrics_path.as_deref().unwrap_or("/metrics"),
        "/metrics",
        "job {}",
        job.job_name
    );
    let targets: Vec<&String> = job.static_configs.iter().flat_map(|c| &c.targets).collect();
    assert_eq!(
        targets,
        [&format!("{name}:{metrics}")],
        "job {}",
        job.job_name
    );
}

#[test]
fn prometheus_gets_its_configuration_and_rule_files_mounted() {
    let compose = compose();
    let (name, prometheus_service) = compose
        .services
        .iter()
        .find(|(_, s)| s.image.as_deref().is_some_and(|i| i.contains("prometheus")))
        .expect("a Prometheus service");
    let mounts: Vec<Mount> = prometheus_service
        .volumes
        .iter()
        .map(|v| Mount::parse(v))
        .collect();
    let mounted = |target: &str| mounts.iter().any(|m| m.target == target && m.is_bind());
    assert!(
        mounted("/etc/prometheus/prometheus.yml"),
        "{name} does not mount prometheus.yml: {mounts:?}"
    );
    for rule_file in prometheus().rule_files {
        let target = if rule_file.starts_with('/') {
            rule_file.clone()
        } else {
            format!("/etc/prometheus/{rule_file}")
        };
        assert!(
            mounted(&target),
            "prometheus.yml loads {rule_file}, which {name} does not mount"
        );
    }
}

#[test]
fn the_config_names_the_compose_services_as_hosts() {
    let compose = compose();
    let config = evshift_toml();
    let urls = std::iter::once(("control store".to_string(), config.control.url.clone())).chain(
        config
            .stores
            .iter()
            .map(|s| (format!("store {}", s.id), s.url.clone())),
    );
    for (what, url) in urls {
        let pg = postgres_config(&url);
        let host = match pg.get_hosts() {
            [Host::Tcp(host)] => host.clone(),
            hosts => panic!("{what}: expected one TCP host, got {hosts:?}"),
        };
        let service = service(&compose, &host);
        assert!(
            service
                .image
                .as_deref()
                .is_some_and(|i| i.starts_with("postgres:")),
            "{what}: service {host} is no Postgres container"
        );
        assert_eq!(pg.get_ports(), [POSTGRES_PORT], "{what}: port");
        let env = |key: &str| service.environment.get(key).map(String::as_str);
        assert_eq!(pg.get_dbname(), env("POSTGRES_DB"), "{what}: database");
        assert_eq!(
            pg.get_user(),
            Some(env("POSTGRES_USER").unwrap_or("postgres")),
            "{what}: user"
        );
        assert_eq!(
            pg.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            env("POSTGRES_PASSWORD").map(str::to_string),
            "{what}: password"
        );
    }
    // Every event store starts with the eventsource schema of migrations/.
    for store in &config.stores {
        let host = match postgres_config(&store.url).get_hosts() {
            [Host::Tcp(host)] => host.clone(),
            _ => unreachable!("checked above"),
        };
        let schema_mounted = service(&compose, &host).volumes.iter().any(|v| {
            let mount = Mount::parse(v);
            mount.target.starts_with("/docker-entrypoint-initdb.d/")
                && docker_dir()
                    .join(&mount.source)
                    .ends_with("migrations/0001_eventsource_schema.sql")
        });
        assert!(schema_mounted, "store {} ({host}) gets no schema", store.id);
    }
}

#[test]
fn the_image_runs_evshift_as_a_non_root_user_with_the_mounted_config() {
    let compose = compose();
    let (name, evshift) = evshift_service(&compose);
    let (_, dockerfile) = dockerfile_of(evshift);
    let all = instructions(&dockerfile);
    assert!(
        all.iter().any(|i| i.keyword == "RUN"
            && i.arguments.contains("cargo build --release")
            && i.arguments.contains("-p evshift-proxy")),
        "the builder stage runs cargo build --release -p evshift-proxy"
    );
    let runtime = final_stage(&all);

    let user = runtime
        .iter()
        .rfind(|i| i.keyword == "USER")
        .expect("the runtime stage sets USER");
    let user_name = user.arguments.split(':').next().unwrap_or_default();
    assert!(
        !user_name.is_empty() && user_name != "root" && user_name != "0",
        "USER {}",
        user.arguments
    );

    let entrypoint = runtime
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("the runtime stage has an ENTRYPOINT");
    let argv: Vec<String> =
        serde_json::from_str(&entrypoint.arguments).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(argv[..3], ["evshift", "serve", "--config"], "{argv:?}");
    let config_path = &argv[3];
    let mount = evshift
        .volumes
        .iter()
        .map(|v| Mount::parse(v))
        .find(|m| &m.target == config_path)
        .unwrap_or_else(|| panic!("{name} mounts nothing at {config_path}"));
    assert_eq!(
        std::fs::canonicalize(docker_dir().join(&mount.source)).unwrap(),
        std::fs::canonicalize(docker_dir().join("evshift.toml")).unwrap(),
        "{name} mounts docker/evshift.toml at {config_path}"
    );
}

#[test]
fn evshift_check_config_accepts_the_mounted_config() {
    let path = docker_dir().join("evshift.toml");
    let output = Command::new(evshift_binary().unwrap())
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--check-config")
        .output()
        .expect("run evshift");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "check-config: {stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("is valid"),
        "{output:?}"
    );
}
