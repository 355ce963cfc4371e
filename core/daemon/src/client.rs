//! The CLI's client commands (`status`, `pause`, `resume`, `rebuild`): thin callers of the
//! daemon's REST API, so the CLI can do nothing the API cannot.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A request body.
enum Body {
    Json(Value),
    Yaml(String),
}

/// Where the API is and how to authenticate.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The token the daemon and the CLI read: `SINKD_API_TOKEN`, else the file named by
/// `SINKD_API_TOKEN_FILE` (trailing newline ignored).
pub fn token_from_env() -> Result<Option<String>, String> {
    if let Ok(t) = std::env::var("SINKD_API_TOKEN")
        && !t.is_empty()
    {
        return Ok(Some(t));
    }
    match std::env::var("SINKD_API_TOKEN_FILE") {
        Ok(path) if !path.is_empty() => std::fs::read_to_string(&path)
            .map(|t| Some(t.trim_end().to_owned()))
            .map_err(|e| format!("SINKD_API_TOKEN_FILE {path}: {e}")),
        _ => Ok(None),
    }
}

/// `http://127.0.0.1:8080` from a listen address like `0.0.0.0:8080`.
pub fn url_of_listen(listen: &str) -> String {
    format!("http://{}", listen.replacen("0.0.0.0", "127.0.0.1", 1))
}

impl Client {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Client, String> {
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token_from_env()?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.send(method, path, body.map(Body::Json)).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Body>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        match body {
            Some(Body::Json(b)) => req = req.json(&b),
            Some(Body::Yaml(text)) => {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                    .body(text)
            }
            None => {}
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        let hint = if status == StatusCode::UNAUTHORIZED {
            " (set SINKD_API_TOKEN or SINKD_API_TOKEN_FILE)"
        } else {
            ""
        };
        Err(format!("{status}: {message}{hint}"))
    }

    /// `sinkd status [NAME]`.
    pub async fn status(&self, name: Option<&str>, as_json: bool) -> Result<(), String> {
        let (value, list) = match name {
            Some(n) => {
                let v = self
                    .call(Method::GET, &format!("/pipelines/{n}"), None)
                    .await?;
                (v.clone(), vec![v])
            }
            None => {
                let v = self.call(Method::GET, "/pipelines", None).await?;
                let list = v["pipelines"].as_array().cloned().unwrap_or_default();
                (v, list)
            }
        };
        if as_json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(());
        }
        println!(
            "{:<24} {:<11} {:<9} {:>10} {:>8} {:>8}  TARGET",
            "PIPELINE", "STATE", "SINK", "APPLIED", "DEAD", "LAG"
        );
        for p in &list {
            // A capture's lag is its slot's, in WAL bytes.
            let lag = match p["slot"]["lag_bytes"].as_u64() {
                Some(bytes) => format!("{bytes}B"),
                None => p["partitions"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|x| x["lag"].as_i64()).sum::<i64>())
                    .unwrap_or(0)
                    .to_string(),
            };
            println!(
                "{:<24} {:<11} {:<9} {:>10} {:>8} {:>8}  {}",
                p["name"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or(""),
                p["sink"].as_str().unwrap_or(""),
                p["counts"]["applied"].to_string(),
                p["counts"]["dead_lettered"].to_string(),
                lag,
                p["target"].as_str().unwrap_or(""),
            );
            if let Some(e) = p["error"].as_str() {
                println!("  error: {e}");
            }
        }
        if name.is_some() && list[0]["slot"].is_object() {
            let slot = &list[0]["slot"];
            for key in [
                "slot",
                "publication",
                "confirmed_lsn",
                "lag_bytes",
                "lag_seconds",
                "active",
                "last_confirmed_commit",
            ] {
                println!("{key:<22} {}", slot[key]);
            }
        } else if name.is_some() {
            let p = &list[0];
            println!(
                "\n{:<32} {:>10} {:>10} {:>8} {:>10}",
                "PARTITION", "SINK", "HIGH", "LAG", "STALE(s)"
            );
            for x in p["partitions"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:>10} {:>10} {:>8} {:>10}",
                    format!("{}/{}", x["topic"].as_str().unwrap_or(""), x["partition"]),
                    x["sink_offset"].to_string(),
                    x["high_watermark"].to_string(),
                    x["lag"].to_string(),
                    x["staleness_seconds"].to_string(),
                );
            }
            if p["rebuild"].is_object() {
                let r = &p["rebuild"];
                println!(
                    "\nrebuild: {} ({}) {}/{} events",
                    r["phase"].as_str().unwrap_or(""),
                    r["mode"].as_str().unwrap_or(""),
                    r["events_done"],
                    r["events_total"]
                );
            }
        }
        Ok(())
    }

    /// `sinkd pause NAME` / `sinkd resume NAME`.
    pub async fn pause_resume(&self, name: &str, verb: &str) -> Result<(), String> {
        let v = self
            .call(Method::POST, &format!("/pipelines/{name}/{verb}"), None)
            .await?;
        println!("{name}: {}", v["state"].as_str().unwrap_or("?"));
        Ok(())
    }

    /// `sinkd rebuild NAME`: starts (or with `cancel`, cancels) a rebuild; with `follow`,
    /// shows its progress until it ends (following the one under way, if there is one).
    /// Fails if the rebuild does.
    pub async fn rebuild(
        &self,
        name: &str,
        in_place: bool,
        from: Option<&str>,
        follow: bool,
        cancel: bool,
    ) -> Result<(), String> {
        let path = format!("/pipelines/{name}/rebuild");
        if cancel {
            let v = self.call(Method::DELETE, &path, None).await?;
            println!(
                "{name}: rebuild {}",
                v["phase"].as_str().unwrap_or("cancelled")
            );
            return Ok(());
        }
        let mut body = json!({ "mode": if in_place { "in_place" } else { "swap" } });
        if let Some(f) = from {
            body["start"] = match f.parse::<i64>() {
                Ok(ms) => json!(ms),
                Err(_) => json!(f),
            };
        }
        match self.call(Method::POST, &path, Some(body)).await {
            Ok(started) => println!(
                "{name}: rebuild started ({} into {})",
                started["mode"].as_str().unwrap_or(""),
                started["target"].as_str().unwrap_or("")
            ),
            // One under way (say resumed by a restart): following it is what was asked.
            Err(e) if follow && e.starts_with("409") && e.contains("already rebuilding") => {
                println!("{name}: a rebuild is already under way; following it")
            }
            Err(e) => return Err(e),
        }
        if !follow {
            return Ok(());
        }
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {pos}/{len} events  {per_sec}  eta {eta}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        let mut phase = String::new();
        loop {
            let v = self.call(Method::GET, &path, None).await?;
            let now = v["phase"].as_str().unwrap_or("").to_owned();
            bar.set_length(v["events_total"].as_u64().unwrap_or(0));
            bar.set_position(v["events_done"].as_u64().unwrap_or(0));
            bar.set_message(now.clone());
            if now != phase {
                // Without a terminal the bar is hidden: the phases still show, as lines.
                if bar.is_hidden() {
                    eprintln!("{name}: {now}");
                } else {
                    bar.println(format!("{name}: {now}"));
                }
                phase = now;
            }
            match phase.as_str() {
                "done" => {
                    bar.finish();
                    println!(
                        "{name}: rebuilt {} events at {:.0}/s",
                        v["events_done"],
                        v["rate"].as_f64().unwrap_or(0.0)
                    );
                    return Ok(());
                }
                "failed" | "cancelled" | "abandoned" => {
                    bar.abandon();
                    return Err(format!(
                        "rebuild {phase}: {}",
                        v["error"].as_str().unwrap_or("")
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

impl Client {
    /// `sinkd plan FILE…`: each file checked by the daemon and compared with what runs.
    /// Fails when a file does not validate.
    pub async fn plan(&self, files: &[std::path::PathBuf]) -> Result<(), String> {
        let mut invalid = 0;
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            let name = pipeline_name(&text)
                .ok_or_else(|| format!("{}: no top-level `name:`", file.display()))?;
            let path = format!("/pipelines/{}/validate", urlencode(&name));
            let answer = self
                .send(Method::POST, &path, Some(Body::Yaml(text)))
                .await?;
            print!(
                "{}",
                render_plan(&file.display().to_string(), &name, &answer)
            );
            if answer["valid"] != true {
                invalid += 1;
            }
        }
        match invalid {
            0 => Ok(()),
            n => Err(format!("{n} file(s) do not validate; nothing was applied")),
        }
    }
}

impl Client {
    /// `sinkd apply FILE…`: stores each file as a pipeline of the daemon's cluster, which
    /// every daemon of the cluster applies. Stops at the first file refused.
    pub async fn apply(&self, files: &[std::path::PathBuf]) -> Result<(), String> {
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            let name = pipeline_name(&text)
                .ok_or_else(|| format!("{}: no top-level `name:`", file.display()))?;
            let path = format!("/pipelines/{}", urlencode(&name));
            let answer = self
                .send(Method::PUT, &path, Some(Body::Yaml(text)))
                .await
                .map_err(|e| format!("{}: pipeline `{name}`: {e}", file.display()))?;
            let state = answer["pipeline"]["state"]
                .as_str()
                .unwrap_or("not running here");
            println!("{}: pipeline `{name}` applied ({state})", file.display());
            for p in answer["problems"].as_array().into_iter().flatten() {
                println!("  problem: {}", p.as_str().unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// The value of the file's top-level `name:` (the plan asks the daemon by name; the daemon
/// checks the whole file).
fn pipeline_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("name:")?;
        let value = rest.split(" #").next()?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One file's plan as the CLI prints it.
fn render_plan(file: &str, name: &str, answer: &Value) -> String {
    let mut out = String::new();
    if answer["valid"] != true {
        out.push_str(&format!("{file}: pipeline `{name}`: does not validate\n"));
        for e in answer["errors"].as_array().into_iter().flatten() {
            let line = e["line"]
                .as_u64()
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            let field = e["field"]
                .as_str()
                .map(|f| format!(" field `{f}`:"))
                .unwrap_or_default();
            let message = e["message"].as_str().unwrap_or_default();
            out.push_str(&format!("  {file}{line}:{field} {message}\n"));
        }
        return out;
    }
    let plan = &answer["plan"];
    let action = plan["action"].as_str().unwrap_or("?");
    let what = match action {
        "create" => "new pipeline, would start",
        "unchanged" => "unchanged",
        _ => "changed, would restart alone from its checkpoints",
    };
    out.push_str(&format!("{file}: pipeline `{name}`: {what}\n"));
    for c in plan["changes"].as_array().into_iter().flatten() {
        let field = c["field"].as_str().unwrap_or_default();
        let line = match (c["old"].as_str(), c["new"].as_str()) {
            (None, Some(new)) => format!("+ {field}: {new}"),
            (Some(old), None) => format!("- {field}: {old}"),
            (Some(old), Some(new)) => format!("~ {field}: {old} -> {new}"),
            (None, None) => format!("~ {field}"),
        };
        out.push_str(&format!("  {line}\n"));
    }
    let list = |key: &str| -> Vec<&str> {
        plan[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let rebuild_for = list("rebuild_for");
    if !rebuild_for.is_empty() {
        out.push_str(&format!(
            "  needs a rebuild (sinkd rebuild {name}) for the rows already written to follow: {}\n",
            rebuild_for.join(", ")
        ));
    }
    let new_target = list("new_target_for");
    if !new_target.is_empty() {
        out.push_str(&format!(
            "  writes another target, which fills from the start; the old one stays: {}\n",
            new_target.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_read_from_the_top_level_only() {
        let text = "# orders\nname: \"orders\" # the read model\nsink:\n  name: x\n";
        assert_eq!(pipeline_name(text).as_deref(), Some("orders"));
        assert_eq!(pipeline_name("sink:\n  name: x\n"), None);
    }

    #[test]
    fn a_plan_shows_changes_and_what_they_need() {
        let answer = serde_json::json!({"valid": true, "plan": {
            "action": "update",
            "changes": [{"field": "batch.max_events", "old": "5000", "new": "200"},
                        {"field": "events.Gift", "old": null, "new": "{…}"}],
            "rebuild_for": ["events.Gift"], "new_target_for": []}});
        let text = render_plan("orders.yaml", "orders", &answer);
        assert_eq!(
            text,
            "orders.yaml: pipeline `orders`: changed, would restart alone from its checkpoints\n  \
             ~ batch.max_events: 5000 -> 200\n  + events.Gift: {…}\n  \
             needs a rebuild (sinkd rebuild orders) for the rows already written to follow: events.Gift\n"
        );
    }
}
