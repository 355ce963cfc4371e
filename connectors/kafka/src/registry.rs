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
        })
    }

    /// The converter's decoder (schema cache, reference resolution, datum decoding).
    pub fn avro(&self) -> &AvroDecoder {
        &self.decoder
    }

    /// The writer schema of an id, classified on failure.
    pub async fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, RecordError> {
        self.decoder
            .get_schema(id)
            .await
            .map_err(|e| self.classify(id, e))
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
        let body = response.text().await.unwrap_or_default();
        let message = format!("POST {path} answered {status}: {body}");
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
            response
                .json::<T>()
                .await
                .map(Some)
                .map_err(|e| RecordError::RegistryUnavailable(format!("GET {path}: bad body: {e}")))
        } else if status.as_u16() == 401 || status.as_u16() == 403 {
            Err(RecordError::RegistryRefused(format!(
                "GET {path} answered {status}"
            )))
        } else if status.is_server_error() {
            Err(RecordError::RegistryUnavailable(format!(
                "GET {path} answered {status}"
            )))
        } else {
            Ok(None)
        }
    }

    fn classify(&self, id: u32, e: SRCError) -> RecordError {
        let text = format!("{} {}", e.error, e.cause.as_deref().unwrap_or(""));
        if e.retriable || text.contains("status 5") || text.contains("error sending request") {
            // Not the schema's fault: forget the cached failure and let the caller retry.
            self.decoder.remove_errors_from_cache();
            RecordError::RegistryUnavailable(text)
        } else if text.contains("status 401") || text.contains("status 403") {
            self.decoder.remove_errors_from_cache();
            RecordError::RegistryRefused(text)
        } else {
            RecordError::UnknownSchemaId { id, detail: text }
        }
    }
}
