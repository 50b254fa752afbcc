//! `all`: every scenario in turn, each written to the results folder as soon as it finished
//! (JSON, its markdown section, its figures), plus `README.md` with every section.

use std::path::Path;

use anyhow::{Context, Result};

use super::{copy, migrate, passthrough, routed, scale, Environment, ScenarioOutput};

/// The settings of every scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    pub passthrough: passthrough::Settings,
    pub routed: routed::Settings,
    pub copy: copy::Settings,
    pub scale: scale::Settings,
    pub migrate: migrate::Settings,
}

/// Runs every scenario, writing into `out`; returns their outputs.
pub async fn run(
    env: &Environment,
    settings: &Settings,
    out: &Path,
) -> Result<Vec<ScenarioOutput>> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut outputs = Vec::new();
    outputs.push(finish(
        out,
        passthrough::run(env, &settings.passthrough).await?,
    )?);
    outputs.push(finish(out, routed::run(env, &settings.routed).await?)?);
    outputs.push(finish(out, copy::run(env, &settings.copy).await?)?);
    outputs.push(finish(out, scale::run(env, &settings.scale).await?)?);
    outputs.push(finish(out, migrate::run(env, &settings.migrate).await?)?);
    let summary: Vec<&str> = outputs.iter().map(|o| o.markdown.as_str()).collect();
    let readme = format!("# evshift benchmark results\n\n{}\n", summary.join("\n"));
    let path = out.join("README.md");
    std::fs::write(&path, readme).with_context(|| format!("write {}", path.display()))?;
    Ok(outputs)
}

fn finish(out: &Path, output: ScenarioOutput) -> Result<ScenarioOutput> {
    output.write_to(out)?;
    println!("{}", output.markdown);
    Ok(output)
}
