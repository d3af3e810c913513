//! Jobs in and out in bulk: OPML subscription lists (rss jobs) and JSON
//! exports of any jobs (without secret values).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use ingest_model::{FieldViolation, JobRecord, Labels, Selector, validate_labels};
use ingest_store::keys::KeyKind;

use crate::error::ControlError;
use crate::opml;
use crate::service::{ControlService, JobOutcome, MAX_BULK, NewJob};
use crate::views::{decode, scan_prefix};

/// The job type OPML feeds become, and its URL parameter.
const RSS: &str = "rss";
const URL_PARAM: &str = "url";
/// Jobs created at once by an import.
const IMPORT_CONCURRENCY: usize = 16;

/// An OPML import as asked for.
#[derive(Clone, Debug, Default)]
pub struct OpmlImport {
    pub opml: String,
    pub validate_only: bool,
    pub interval: Option<Duration>,
    pub labels: Labels,
    pub paused: bool,
}

/// What an import did with one feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedOutcome {
    Created(String),
    WouldCreate,
    /// The id of the job already reading it (empty: listed earlier in the
    /// same document, not created since this is a dry run).
    Duplicate(String),
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct ImportedFeed {
    pub url: String,
    pub title: String,
    pub outcome: FeedOutcome,
}

/// A job to import: what to create, and the secrets its export named.
pub struct JobImport {
    pub job: NewJob,
    pub secret_names: Vec<String>,
}

impl ControlService {
    /// Creates an rss job per new feed of an OPML document (see
    /// `ImportOpml`).
    pub async fn import_opml(&self, request: OpmlImport) -> Result<Vec<ImportedFeed>, ControlError> {
        let feeds = opml::parse(&request.opml).map_err(|e| ControlError::invalid("opml", e))?;
        let violations = validate_labels(&request.labels, "labels");
        if !violations.is_empty() {
            return Err(ControlError::Invalid(violations));
        }
        let mut reading: HashMap<String, String> = HashMap::new();
        for record in self.all_jobs().await?.into_iter().filter(|r| r.job_type == RSS) {
            if let Some(url) = record.params.get(URL_PARAM).and_then(|u| u.as_str()) {
                reading.insert(normalize(url), record.id);
            }
        }
        // Duplicates first (against the jobs and within the document), then
        // the creations, a few at a time, in document order.
        let mut plan: Vec<(ImportedFeed, Option<NewJob>)> = Vec::with_capacity(feeds.len());
        for feed in feeds {
            let key = normalize(&feed.url);
            let imported =
                ImportedFeed { url: feed.url.clone(), title: feed.title.clone(), outcome: FeedOutcome::WouldCreate };
            if let Some(id) = reading.get(&key) {
                plan.push((ImportedFeed { outcome: FeedOutcome::Duplicate(id.clone()), ..imported }, None));
                continue;
            }
            reading.insert(key, String::new());
            let mut labels = request.labels.clone();
            if let Some(category) = feed.category.as_deref().and_then(category_label) {
                labels.entry("category".to_string()).or_insert(category);
            }
            let name = if feed.title.is_empty() { feed.url.clone() } else { feed.title.clone() };
            let job = NewJob {
                name: name.chars().take(ingest_model::job::MAX_NAME_CHARS).collect(),
                job_type: RSS.to_string(),
                params: serde_json::Map::from_iter([(URL_PARAM.to_string(), feed.url.into())]),
                interval: request.interval,
                paused: request.paused,
                labels,
                ..Default::default()
            };
            plan.push((imported, Some(job)));
        }
        let validate_only = request.validate_only;
        let done: Vec<Result<ImportedFeed, ControlError>> = futures::stream::iter(plan)
            .map(|(mut feed, job)| async move {
                let Some(job) = job else { return Ok(feed) };
                feed.outcome = match self.create_job(job, validate_only).await {
                    Ok(_) if validate_only => FeedOutcome::WouldCreate,
                    Ok(view) => FeedOutcome::Created(view.record.id),
                    Err(ControlError::Invalid(violations)) => FeedOutcome::Invalid(readable(&violations)),
                    Err(other) => return Err(other),
                };
                Ok(feed)
            })
            .buffered(IMPORT_CONCURRENCY)
            .collect()
            .await;
        let feeds = done.into_iter().collect::<Result<Vec<_>, _>>()?;
        let created = feeds.iter().filter(|f| matches!(f.outcome, FeedOutcome::Created(_))).count();
        tracing::info!(feeds = feeds.len(), created, validate_only, "OPML import");
        Ok(feeds)
    }

    /// The rss jobs (matching `selector`) as an OPML document.
    pub async fn export_opml(&self, selector: Option<&Selector>) -> Result<String, ControlError> {
        let mut jobs: Vec<JobRecord> = self.export_jobs(selector).await?;
        jobs.retain(|r| r.job_type == RSS);
        jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let feeds = jobs.iter().filter_map(|r| Some((r.name.as_str(), r.params.get(URL_PARAM)?.as_str()?)));
        Ok(opml::write("ingest feeds", feeds))
    }

    /// The specs of the jobs matching `selector`, in id order (secret values
    /// are never in a spec).
    pub async fn export_jobs(&self, selector: Option<&Selector>) -> Result<Vec<JobRecord>, ControlError> {
        let mut jobs = self.all_jobs().await?;
        jobs.retain(|r| selector.is_none_or(|s| s.matches(&r.labels)));
        Ok(jobs)
    }

    /// Creates exported jobs (see `ImportJobs`); one outcome per job, in
    /// order, with the created job's revision.
    pub async fn import_jobs(
        &self,
        jobs: Vec<JobImport>,
        validate_only: bool,
    ) -> Result<Vec<JobOutcome>, ControlError> {
        if jobs.len() > MAX_BULK {
            return Err(ControlError::invalid("jobs", format!("at most {MAX_BULK} jobs per call, got {}", jobs.len())));
        }
        let outcomes = futures::stream::iter(jobs)
            .map(|JobImport { job, secret_names }| async move {
                let id = job.id.clone().unwrap_or_default();
                let missing: Vec<FieldViolation> = secret_names
                    .iter()
                    .filter(|name| !job.params.contains_key(*name))
                    .map(|name| {
                        FieldViolation::new(
                            format!("job.params.{name}"),
                            "enter this secret again: exports carry no secret values",
                        )
                    })
                    .collect();
                let result = if missing.is_empty() {
                    self.create_job(job, validate_only).await.map(|view| view.revision)
                } else {
                    Err(ControlError::Invalid(missing))
                };
                JobOutcome { id, result }
            })
            .buffered(IMPORT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
        tracing::info!(jobs = outcomes.len(), failed, validate_only, "jobs imported");
        Ok(outcomes)
    }

    async fn all_jobs(&self) -> Result<Vec<JobRecord>, ControlError> {
        let kvs = scan_prefix(self.store().as_ref(), self.keys().prefix(KeyKind::Job)).await?;
        Ok(kvs.iter().filter_map(decode::<JobRecord>).collect())
    }
}

/// A URL in the form duplicates are found by (parsed and written back:
/// scheme and host lowercased, default port dropped); as given when it
/// does not parse.
fn normalize(url: &str) -> String {
    url::Url::parse(url.trim()).map_or_else(|_| url.trim().to_string(), |u| u.to_string())
}

/// An OPML folder name as a label value ("Tech & Code" → "tech-code"), when
/// one can be made.
fn category_label(name: &str) -> Option<String> {
    let mut value = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            value.push(c);
        } else if !value.ends_with('-') {
            value.push('-');
        }
    }
    let value: String = value.trim_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(63).collect();
    let value = value.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    let labels = Labels::from([("category".to_string(), value.clone())]);
    (!value.is_empty() && validate_labels(&labels, "labels").is_empty()).then_some(value)
}

fn readable(violations: &[FieldViolation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_become_label_values_when_they_can() {
        assert_eq!(category_label("Tech & Code").as_deref(), Some("tech-code"));
        assert_eq!(category_label("  News.EU_2 ").as_deref(), Some("news.eu_2"));
        assert_eq!(category_label("日本語"), None);
        assert_eq!(category_label(&"x".repeat(80)).map(|v| v.len()), Some(63));
    }

    #[test]
    fn duplicate_urls_are_found_in_their_normal_form() {
        assert_eq!(normalize("HTTPS://Example.COM:443/feed"), normalize("https://example.com/feed"));
        assert_ne!(normalize("https://example.com/feed"), normalize("https://example.com/other"));
        assert_eq!(normalize(" not a url "), "not a url");
    }
}
