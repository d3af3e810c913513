//! `stocks`: quotes for a list of symbols from Finnhub's documented quote
//! API (`GET /api/v1/quote?symbol=…`, key sent in the `X-Finnhub-Token`
//! header, never in the URL). One document per symbol and quote time, with
//! that as its `_id`.

use std::time::Duration;

use async_trait::async_trait;
use http::header::HeaderName;
use ingest_model::{JobParams, Secret};
use ingest_sinks::Item;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport, base_url};
use crate::fetch::{FetchError, Request};

pub const NAME: &str = "stocks";

pub struct Stocks {
    symbols: Vec<String>,
    api_key: String,
    base: Url,
}

#[derive(Debug, Deserialize, JobParams)]
pub struct StocksParams {
    /// Ticker symbols, e.g. AAPL, MSFT.
    #[param(min = 1, max_length = 50, pattern = r"\s*[A-Za-z0-9.:^-]+\s*")]
    symbols: Vec<String>,
    /// Finnhub API key.
    api_key: Secret,
    /// The API's base URL.
    #[param(default = "https://finnhub.io/api/v1/")]
    base_url: Url,
}

impl JobType for Stocks {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Stock quotes for a list of symbols, from Finnhub.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(15);
    type Params = StocksParams;

    fn properties() -> Value {
        let price = json!({"type": "double"});
        json!({
            "symbol": {"type": "keyword"}, "time": {"type": "date"}, "price": price, "change": price,
            "change_percent": price, "high": price, "low": price, "open": price, "previous_close": price,
        })
    }

    fn build(_job_id: &str, params: StocksParams) -> Result<Self, String> {
        Ok(Stocks {
            symbols: params.symbols.iter().map(|s| s.trim().to_ascii_uppercase()).collect(),
            api_key: params.api_key.expose().to_string(),
            base: base_url(params.base_url),
        })
    }
}

impl Stocks {
    fn item(&self, symbol: &str, quote: &Value) -> Result<Option<Item>, JobError> {
        let malformed = || JobError::new(format!("the quote of {symbol} is not a Finnhub quote: {quote}"));
        let time = quote.get("t").and_then(Value::as_i64).ok_or_else(malformed)?;
        // Finnhub answers an unknown symbol with zeros.
        if time == 0 {
            return Ok(None);
        }
        let at = chrono::DateTime::from_timestamp(time, 0).ok_or_else(malformed)?;
        let mut doc = Map::new();
        doc.insert("symbol".into(), json!(symbol));
        doc.insert("time".into(), json!(at.to_rfc3339()));
        for (field, name) in [
            ("c", "price"),
            ("d", "change"),
            ("dp", "change_percent"),
            ("h", "high"),
            ("l", "low"),
            ("o", "open"),
            ("pc", "previous_close"),
        ] {
            if let Some(v) = quote.get(field).filter(|v| v.is_number()) {
                doc.insert(name.into(), v.clone());
            }
        }
        if !doc.contains_key("price") {
            return Err(malformed());
        }
        Ok(Some(Item { id: format!("{symbol}:{time}"), doc, raw: Some(quote.to_string().into()) }))
    }
}

#[async_trait]
impl Job for Stocks {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let mut report = RunReport::default();
        let mut items = Vec::new();
        let mut unknown = Vec::new();
        for symbol in &self.symbols {
            let mut url = self.base.join("quote").map_err(|e| JobError::new(format!("base_url: {e}")))?;
            url.query_pairs_mut().append_pair("symbol", symbol);
            let request = Request::get(url, "application/json")
                .header(HeaderName::from_static("x-finnhub-token"), &self.api_key)?;
            let response = ctx.fetch.get(&request).await.map_err(|e| match e {
                FetchError::Status { status: 401 | 403, .. } => {
                    JobError { report, ..JobError::new(format!("Finnhub refused the API key ({e}); check api_key")) }
                }
                other => JobError { report, ..other.into() },
            })?;
            report.bytes_fetched += response.body.len() as u64;
            let quote: Value = serde_json::from_slice(&response.body).map_err(|e| JobError {
                report,
                ..JobError::new(format!("Finnhub answered something else than JSON: {e}"))
            })?;
            match self.item(symbol, &quote).map_err(|e| JobError { report, ..e })? {
                Some(item) => items.push(item),
                None => unknown.push(symbol.as_str()),
            }
        }
        report.items_fetched = items.len() as u64;
        let delivered = ctx.deliver(items, &mut report).await?;
        let warning = match unknown.is_empty() {
            true => delivered,
            false => Some(format!("no quote for {} (unknown symbols?)", unknown.join(", "))),
        };
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}

#[cfg(test)]
mod tests;
