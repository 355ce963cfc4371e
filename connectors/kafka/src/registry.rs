//! The Confluent-compatible schema registry, through `schema_registry_converter`.
//!
//! Only the public Confluent REST API is used: `GET /schemas/ids/{id}` (through the
//! converter, which also resolves references and caches) and `GET /schemas/ids/{id}/versions`
//! for the writer schema's version in its subject. Caches are plain maps whose locks are
//! never held across an HTTP call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use serde::Deserialize;
use sinkd_core::config::RegistryConfig;
use sinkd_core::error::RecordError;

/// A registry client with caches.
pub struct Registry {
    decoder: AvroDecoder,
    http: reqwest::Client,
    url: String,
    auth: Auth,
    versions: RwLock<HashMap<u32, Arc<Vec<SubjectVersion>>>>,
    /// Ids the registry does not have, or holds no usable schema for: why, by id.
    unusable: RwLock<HashMap<u32, String>>,
}

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One `(subject, version)` an id is registered under.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SubjectVersion {
    /// Subject name.
    pub subject: String,
    /// Version within the subject.
    pub version: u32,
}

/// A schema registered under a subject.
#[derive(Clone, Debug, Deserialize)]
pub struct SubjectSchema {
    /// Version within the subject.
    pub version: u32,
    /// Global id.
    pub id: u32,
    /// The schema text.
    pub schema: String,
}

impl Registry {
    /// A client for the configured registry.
    pub fn new(cfg: &RegistryConfig) -> Result<Registry, String> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let url = cfg.url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(url.clone());
        builder.set_timeout(timeout);
        let auth = match (&cfg.basic_auth, &cfg.bearer_token) {
            (Some(_), Some(_)) => {
                return Err("registry: set basic_auth or bearer_token, not both".into());
            }
            (Some(b), None) => {
                builder.set_basic_authorization(&b.username, Some(&b.password));
                Auth::Basic(b.username.clone(), b.password.clone())
            }
            (None, Some(t)) => {
                builder.set_token_authorization(t);
                Auth::Bearer(t.clone())
            }
            (None, None) => Auth::None,
        };
        let settings = builder
            .build()
            .map_err(|e| format!("registry client for {url}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("registry HTTP client: {e}"))?;
        Ok(Registry {
            decoder: AvroDecoder::new(settings),
            http,
            url,
            auth,
            versions: RwLock::new(HashMap::new()),
            unusable: RwLock::new(HashMap::new()),
        })
    }

    /// Forgets what earlier tasks learned the registry lacks: ids it did not have, failed
    /// lookups, and the subjects an id was registered under. The client outlives its
    /// pipeline's tasks, and a task start often follows an operator's fix (a schema
    /// registered, a subject added) that it must see. Parsed schemas are kept: an id's
    /// schema never changes.
    pub fn forget_failures(&self) {
        self.unusable.write().expect("lock poisoned").clear();
        self.versions.write().expect("lock poisoned").clear();
        self.decoder.remove_errors_from_cache();
    }

    /// The writer schema of an id, classified on failure: a registry that cannot be
    /// reached (or answers 5xx) is [`RecordError::RegistryUnavailable`], to be waited out;
    /// only an id the registry answers for, with a schema that cannot be used, is the
    /// record's fault.
    pub async fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, RecordError> {
        let e = match self.decoder.get_schema(id).await {
            Ok(schema) => return Ok(schema),
            Err(e) => e,
        };
        match self.classify(id, e).await {
            Verdict::Refused(e) => Err(e),
            // The registry has the id now, yet the converter failed: its failure may
            // predate the answer (a 500 while the registry was restarting, cached by the
            // converter). Ask once more, afresh, before blaming the schema.
            Verdict::Has => {
                self.decoder.remove_errors_from_cache();
                match self.decoder.get_schema(id).await {
                    Ok(schema) => Ok(schema),
                    Err(e) if schema_unusable(&e) => Err(self.unusable(id, converter_words(&e))),
                    // A 5xx, a body cut short, a reference that could not be fetched: the
                    // registry's trouble, waited out (with the cause in the warning).
                    Err(e) => Err(unavailable(id, &e)),
                }
            }
        }
    }

    /// Where an id is registered, cached. An empty list when the registry does not offer
    /// the lookup (its absence only costs the version, which then defaults to 1).
    pub async fn subject_versions(&self, id: u32) -> Result<Arc<Vec<SubjectVersion>>, RecordError> {
        if let Some(v) = self.versions.read().expect("lock poisoned").get(&id) {
            return Ok(v.clone());
        }
        let versions = self
            .get_json::<Vec<SubjectVersion>>(&format!("/schemas/ids/{id}/versions"))
            .await?
            .unwrap_or_default();
        let versions = Arc::new(versions);
        self.versions
            .write()
            .expect("lock poisoned")
            .insert(id, versions.clone());
        Ok(versions)
    }

    /// A registered schema by subject and version (`None`: the latest), as text with its
    /// version. Not cached here: callers ask once per schema.
    pub async fn subject_schema(
        &self,
        subject: &str,
        version: Option<u32>,
    ) -> Result<SubjectSchema, RecordError> {
        let v = version.map_or("latest".to_owned(), |v| v.to_string());
        let path = format!("/subjects/{subject}/versions/{v}");
        self.get_json::<SubjectSchema>(&path).await?.ok_or_else(|| {
            RecordError::RegistryRefused(format!("GET {path}: no such subject or version"))
        })
    }

    /// Registers `schema` (Avro JSON) under `subject`, or finds it already registered
    /// there, and returns its id. Any 4xx is the schema's or the subject's fault
    /// (incompatible, invalid) and comes back as `RegistryRefused` with the registry's
    /// own message.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RecordError> {
        #[derive(serde::Deserialize)]
        struct Registered {
            id: u32,
        }
        let path = format!("/subjects/{subject}/versions");
        let request = self.authorised(self.http.post(format!("{}{path}", self.url)));
        let response = request
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .map_err(|e| RecordError::RegistryUnavailable(format!("POST {path}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<Registered>()
                .await
                .map(|r| r.id)
                .map_err(|e| {
                    RecordError::RegistryUnavailable(format!("POST {path}: bad body: {e}"))
                });
        }
        let message = answered(
            "POST",
            &path,
            status,
            &response.text().await.unwrap_or_default(),
        );
        if status.is_server_error() {
            Err(RecordError::RegistryUnavailable(message))
        } else {
            Err(RecordError::RegistryRefused(message))
        }
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic(u, p) => request.basic_auth(u, Some(p)),
            Auth::Bearer(t) => request.bearer_auth(t),
        }
    }

    /// `GET` a registry path as JSON. `Ok(None)` when the registry answers 4xx (other than
    /// 401/403): the thing asked for does not exist.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, RecordError> {
        let request = self.authorised(self.http.get(format!("{}{path}", self.url)));
        let response = request
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(|e| RecordError::RegistryUnavailable(format!("GET {path}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map(Some).map_err(|e| {
                RecordError::RegistryUnavailable(format!("GET {path}: bad body: {e}"))
            });
        }
        let answer = answered(
            "GET",
            path,
            status,
            &response.text().await.unwrap_or_default(),
        );
        match status.as_u16() {
            401 | 403 => Err(RecordError::RegistryRefused(answer)),
            408 | 429 | 500..=599 => Err(RecordError::RegistryUnavailable(answer)),
            _ => Ok(None),
        }
    }

    /// Classifies a failed schema lookup by what the registry answers. A transport
    /// failure (the converter marks it retriable) is the registry's unavailability, never
    /// the id's. Otherwise the converter's error keeps the HTTP status only as text and
    /// drops a body without `error_code` (Karapace's `{"message": "Unauthorized"}`), so the
    /// same path is asked again here, once, to report the status and the registry's own
    /// message. An id found unusable is remembered (as the converter remembers it), so a
    /// stream of records with a bad id costs no request each.
    async fn classify(&self, id: u32, e: SRCError) -> Verdict {
        if let Some(detail) = self.unusable.read().expect("lock poisoned").get(&id) {
            return Verdict::Refused(RecordError::UnknownSchemaId {
                id,
                detail: detail.clone(),
            });
        }
        if e.retriable {
            return Verdict::Refused(unavailable(id, &e));
        }
        let path = format!("/schemas/ids/{id}");
        let request = self.authorised(self.http.get(format!("{}{path}", self.url)));
        let answer = match request
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
        {
            Err(e) => Err(RecordError::RegistryUnavailable(format!("GET {path}: {e}"))),
            Ok(r) if r.status().is_success() => return Verdict::Has,
            Ok(r) => {
                let status = r.status();
                let answer = answered("GET", &path, status, &r.text().await.unwrap_or_default());
                match status.as_u16() {
                    401 | 403 => Err(RecordError::RegistryRefused(answer)),
                    408 | 429 | 500..=599 => Err(RecordError::RegistryUnavailable(answer)),
                    _ => Ok(answer),
                }
            }
        };
        match answer {
            Ok(detail) => Verdict::Refused(self.unusable(id, detail)),
            Err(e) => {
                // Not the id's fault: forget the converter's cached failure, so the retry
                // asks the registry again.
                self.decoder.remove_errors_from_cache();
                Verdict::Refused(e)
            }
        }
    }

    /// Remembers that `id` holds no usable schema, and why; the record's error.
    fn unusable(&self, id: u32, detail: String) -> RecordError {
        let mut unusable = self.unusable.write().expect("lock poisoned");
        // Bounded: garbage in the schema id field cannot grow it without limit.
        if unusable.len() >= 10_000 {
            unusable.clear();
        }
        unusable.insert(id, detail.clone());
        RecordError::UnknownSchemaId { id, detail }
    }
}

/// What the registry says about an id the converter could not use.
enum Verdict {
    /// It answers for the id (200): the schema itself may be unusable, or the converter's
    /// failure came before the registry could answer.
    Has,
    /// The error to report: the registry refused, lacks the id, or cannot be reached.
    Refused(RecordError),
}

/// Whether the converter failed on the schema itself (its type, its text), the one
/// failure that is the id's fault once the registry has answered for it.
fn schema_unusable(e: &SRCError) -> bool {
    [
        "is not supported",
        "failed to parse Avro schema",
        "cant be turned into a Schema",
    ]
    .iter()
    .any(|m| e.error.contains(m))
}

/// The converter's own words for a failure.
fn converter_words(e: &SRCError) -> String {
    format!("{} {}", e.error, e.cause.as_deref().unwrap_or(""))
        .trim()
        .to_owned()
}

/// A lookup of `id` that failed on the way (connection, timeout, 502/503).
fn unavailable(id: u32, e: &SRCError) -> RecordError {
    RecordError::RegistryUnavailable(format!("GET /schemas/ids/{id}: {}", converter_words(e)))
}

/// `GET /path answered 401 Unauthorized: <the registry's message>`: the registry's own
/// words whatever the body's shape (Confluent's `{error_code, message}`, Karapace's
/// `{message}`, or plain text), cut short if long.
fn answered(method: &str, path: &str, status: reqwest::StatusCode, body: &str) -> String {
    let message = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) => match (json["message"].as_str(), json["error_code"].as_i64()) {
            (Some(m), Some(code)) => format!("{m} (error code {code})"),
            (Some(m), None) => m.to_owned(),
            _ => json.to_string(),
        },
        Err(_) => body.trim().to_owned(),
    };
    let mut message: String = message.chars().take(500).collect();
    if message.is_empty() {
        message = "(no body)".into();
    }
    format!("{method} {path} answered {status}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registrys_message_is_shown_whatever_the_bodys_shape() {
        let s = reqwest::StatusCode::UNAUTHORIZED;
        assert_eq!(
            answered("GET", "/x", s, r#"{"message":"Unauthorized"}"#),
            "GET /x answered 401 Unauthorized: Unauthorized"
        );
        assert_eq!(
            answered(
                "GET",
                "/x",
                s,
                r#"{"error_code":40101,"message":"bad creds"}"#
            ),
            "GET /x answered 401 Unauthorized: bad creds (error code 40101)"
        );
        assert_eq!(
            answered("GET", "/x", s, "<html>nope</html>\n"),
            "GET /x answered 401 Unauthorized: <html>nope</html>"
        );
        assert_eq!(
            answered("GET", "/x", s, ""),
            "GET /x answered 401 Unauthorized: (no body)"
        );
    }
}
