//! What a client does next: the transaction kind, drawn from a weighted mix, and the tenant,
//! drawn uniformly or with a Zipf-like skew.

use std::fmt;
use std::str::FromStr;

use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use serde::Serialize;

/// One transaction type of the eventsource workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// BEGIN, version read, `INSERT ... RETURNING global_position`, COMMIT.
    Append,
    /// All events of one seeded stream, `ORDER BY version`.
    ReadStream,
    /// `SELECT eventsource_feed_horizon()`, then one page of the tenant's feed below it.
    ReadAll,
    /// The snapshot of one seeded aggregate.
    Snapshot,
}

impl TxKind {
    /// Every kind, in report order.
    pub const ALL: [TxKind; 4] = [
        TxKind::Append,
        TxKind::ReadStream,
        TxKind::ReadAll,
        TxKind::Snapshot,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TxKind::Append => "append",
            TxKind::ReadStream => "read_stream",
            TxKind::ReadAll => "read_all",
            TxKind::Snapshot => "snapshot",
        }
    }

    /// Position in [`TxKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn parse(name: &str) -> Option<TxKind> {
        let name = name.replace('-', "_");
        TxKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TxKind {
    type Err = String;

    fn from_str(name: &str) -> Result<TxKind, String> {
        TxKind::parse(name.trim()).ok_or_else(|| {
            format!("unknown transaction {name:?} (append, read_stream, read_all, snapshot)")
        })
    }
}

/// Relative weights of the transaction kinds, e.g. `append=70,read_stream=20,read_all=5,snapshot=5`
/// or a single kind (`append`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix {
    weights: Vec<(TxKind, u32)>,
}

impl Mix {
    /// Only `kind`.
    pub fn only(kind: TxKind) -> Mix {
        Mix {
            weights: vec![(kind, 1)],
        }
    }

    /// The kinds with a positive weight, with their weights.
    pub fn weights(&self) -> &[(TxKind, u32)] {
        &self.weights
    }

    /// Whether `kind` is drawn at all.
    pub fn contains(&self, kind: TxKind) -> bool {
        self.weights.iter().any(|(k, _)| *k == kind)
    }

    /// A sampler for this mix.
    pub fn sampler(&self) -> MixSampler {
        MixSampler {
            kinds: self.weights.iter().map(|(kind, _)| *kind).collect(),
            index: WeightedIndex::new(self.weights.iter().map(|(_, w)| *w))
                .expect("a parsed mix has positive weights"),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(kind, _)] = self.weights.as_slice() {
            return write!(f, "{kind}");
        }
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(kind, weight)| format!("{kind}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(spec: &str) -> Result<Mix, String> {
        let mut weights: Vec<(TxKind, u32)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((name, weight)) => {
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        format!("mix: weight of {name:?} must be a whole number, not {weight:?}")
                    })?;
                    (name.trim(), weight)
                }
                None => (part, 1),
            };
            let kind = TxKind::parse(name).ok_or_else(|| {
                format!(
                    "mix: unknown transaction {name:?} (append, read_stream, read_all, snapshot)"
                )
            })?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(format!("mix: {name} is given twice"));
            }
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        if weights.is_empty() {
            return Err(format!(
                "mix: {spec:?} has no transaction with a positive weight"
            ));
        }
        weights.sort();
        Ok(Mix { weights })
    }
}

/// Draws transaction kinds of a [`Mix`].
#[derive(Debug, Clone)]
pub struct MixSampler {
    kinds: Vec<TxKind>,
    index: WeightedIndex<u32>,
}

impl MixSampler {
    /// The next kind.
    pub fn next(&self, rng: &mut impl Rng) -> TxKind {
        self.kinds[self.index.sample(rng)]
    }
}

/// How transactions spread over tenants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TenantSkew {
    /// Every tenant equally often.
    Uniform,
    /// Tenant i (0-based) weighted 1 / (i + 1)^exponent: tenant 0 is the busiest.
    Zipf {
        /// The exponent; 1.0 is classic Zipf.
        exponent: f64,
    },
}

impl TenantSkew {
    /// A sampler over `tenants` tenants.
    pub fn sampler(self, tenants: usize) -> TenantSampler {
        let weights: Vec<f64> = (0..tenants.max(1))
            .map(|i| match self {
                TenantSkew::Uniform => 1.0,
                TenantSkew::Zipf { exponent } => 1.0 / ((i + 1) as f64).powf(exponent),
            })
            .collect();
        TenantSampler {
            index: WeightedIndex::new(weights).expect("positive finite weights"),
        }
    }
}

impl fmt::Display for TenantSkew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSkew::Uniform => f.write_str("uniform"),
            TenantSkew::Zipf { exponent } => write!(f, "zipf:{exponent}"),
        }
    }
}

impl FromStr for TenantSkew {
    type Err = String;

    fn from_str(spec: &str) -> Result<TenantSkew, String> {
        match spec.trim() {
            "uniform" => Ok(TenantSkew::Uniform),
            "zipf" => Ok(TenantSkew::Zipf { exponent: 1.0 }),
            other => {
                let exponent = other
                    .strip_prefix("zipf:")
                    .and_then(|e| e.parse::<f64>().ok())
                    .filter(|e| e.is_finite() && *e >= 0.0)
                    .ok_or_else(|| {
                        format!(
                            "skew: expected uniform, zipf or zipf:EXPONENT (>= 0), not {other:?}"
                        )
                    })?;
                Ok(TenantSkew::Zipf { exponent })
            }
        }
    }
}

/// Draws tenant indexes.
#[derive(Debug, Clone)]
pub struct TenantSampler {
    index: WeightedIndex<f64>,
}

impl TenantSampler {
    /// The next tenant index.
    pub fn next(&self, rng: &mut impl Rng) -> usize {
        self.index.sample(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mixes_parse_and_print() {
        let mix: Mix = "read_stream=20, append=70,read-all=5,snapshot=0"
            .parse()
            .unwrap();
        assert_eq!(mix.to_string(), "append=70,read_stream=20,read_all=5");
        assert!(!mix.contains(TxKind::Snapshot));
        assert_eq!("append".parse::<Mix>().unwrap(), Mix::only(TxKind::Append));
        assert!("append=x"
            .parse::<Mix>()
            .unwrap_err()
            .contains("whole number"));
        assert!("insert".parse::<Mix>().unwrap_err().contains("unknown"));
        assert!("append=0".parse::<Mix>().is_err());
        assert!("append,append=2"
            .parse::<Mix>()
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn zipf_prefers_the_first_tenant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sampler = "zipf:1.5".parse::<TenantSkew>().unwrap().sampler(8);
        let mut counts = [0u32; 8];
        for _ in 0..10_000 {
            counts[sampler.next(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[7], "{counts:?}");
        assert!("zipf:-1".parse::<TenantSkew>().is_err());
        assert_eq!(
            "uniform".parse::<TenantSkew>().unwrap(),
            TenantSkew::Uniform
        );
    }
}
