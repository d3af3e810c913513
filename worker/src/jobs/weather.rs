//! `weather`: current conditions and an hourly forecast for one place from
//! Open-Meteo (`/v1/forecast`, no key). One document per place, kind and
//! time, with that as its `_id`: a newer forecast for the same hour replaces
//! the older one.

use std::time::Duration;

use async_trait::async_trait;
use ingest_model::{JobParams, ParamRule};
use ingest_sinks::Item;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, JobType, NextRun, RunContext, RunOutcome, RunReport, base_url};
use crate::fetch::{FetchError, Request};

pub const NAME: &str = "weather";

/// Variables Open-Meteo documents for `current` and `hourly`.
const VARIABLES: &[&str] = &[
    "temperature_2m",
    "relative_humidity_2m",
    "dew_point_2m",
    "apparent_temperature",
    "precipitation",
    "rain",
    "showers",
    "snowfall",
    "weather_code",
    "cloud_cover",
    "pressure_msl",
    "surface_pressure",
    "wind_speed_10m",
    "wind_direction_10m",
    "wind_gusts_10m",
    "visibility",
    "is_day",
    "uv_index",
];

pub struct Weather {
    latitude: f64,
    longitude: f64,
    place: Option<String>,
    current: Vec<String>,
    hourly: Vec<String>,
    forecast_days: i64,
    base: Url,
}

#[derive(Debug, Deserialize, JobParams)]
#[params(rule = ParamRule::any_of(&["current", "hourly"]))]
pub struct WeatherParams {
    /// Latitude in degrees.
    #[param(min = -90, max = 90)]
    latitude: f64,
    /// Longitude in degrees.
    #[param(min = -180, max = 180)]
    longitude: f64,
    /// A name for the place, copied into every document.
    #[param(max_length = 200)]
    place: Option<String>,
    /// Current-conditions variables.
    #[param(
        allowed = VARIABLES,
        default = ["temperature_2m", "relative_humidity_2m", "precipitation", "weather_code", "wind_speed_10m"]
    )]
    current: Vec<String>,
    /// Hourly forecast variables (none: no forecast).
    #[param(allowed = VARIABLES, default = [])]
    hourly: Vec<String>,
    /// Days of hourly forecast.
    #[param(default = 1, min = 1, max = 16)]
    forecast_days: i64,
    /// The API's base URL.
    #[param(default = "https://api.open-meteo.com/v1/")]
    base_url: Url,
}

impl JobType for Weather {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "Current weather and an hourly forecast for a place, from Open-Meteo.";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);
    const MIN_INTERVAL: Duration = Duration::from_secs(60);
    type Params = WeatherParams;

    fn properties() -> Value {
        json!({
            "place": {"type": "keyword"}, "location": {"type": "geo_point"}, "kind": {"type": "keyword"},
            "time": {"type": "date"}, "values": {"type": "object", "dynamic": true}, "units": {"type": "object", "enabled": false},
            "elevation": {"type": "float"},
        })
    }

    fn build(_job_id: &str, params: WeatherParams) -> Result<Self, String> {
        Ok(Weather {
            latitude: params.latitude,
            longitude: params.longitude,
            place: params.place,
            current: params.current,
            hourly: params.hourly,
            forecast_days: params.forecast_days,
            base: base_url(params.base_url),
        })
    }
}

impl Weather {
    fn url(&self) -> Result<Url, JobError> {
        let mut url = self.base.join("forecast").map_err(|e| JobError::new(format!("base_url: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("latitude", &self.latitude.to_string())
                .append_pair("longitude", &self.longitude.to_string());
            if !self.current.is_empty() {
                query.append_pair("current", &self.current.join(","));
            }
            if !self.hourly.is_empty() {
                query.append_pair("hourly", &self.hourly.join(","));
                query.append_pair("forecast_days", &self.forecast_days.to_string());
            }
            query.append_pair("timezone", "UTC").append_pair("timeformat", "unixtime");
        }
        Ok(url)
    }

    /// The place part of ids: the coordinates to 4 decimals (about 10 m).
    fn place_key(&self) -> String {
        format!("{:.4},{:.4}", self.latitude, self.longitude)
    }

    fn item(&self, kind: &str, time: i64, values: Map<String, Value>, units: &Value, answer: &Value) -> Item {
        let at = chrono::DateTime::from_timestamp(time, 0);
        let mut doc = Map::new();
        if let Some(place) = &self.place {
            doc.insert("place".into(), json!(place));
        }
        doc.insert("location".into(), json!({"lat": self.latitude, "lon": self.longitude}));
        doc.insert("kind".into(), json!(kind));
        if let Some(at) = at {
            doc.insert("time".into(), json!(at.to_rfc3339()));
        }
        doc.insert("values".into(), Value::Object(values));
        doc.insert("units".into(), units.clone());
        if let Some(elevation) = answer.get("elevation") {
            doc.insert("elevation".into(), elevation.clone());
        }
        Item { id: format!("weather:{}:{kind}:{time}", self.place_key()), doc, raw: None }
    }
}

#[async_trait]
impl Job for Weather {
    async fn run(&mut self, ctx: &mut RunContext<'_>) -> Result<RunOutcome, JobError> {
        let response = ctx.fetch.get(&Request::get(self.url()?, "application/json")).await.map_err(|e| match e {
            // Open-Meteo explains a bad request in {"error": true, "reason": "..."}.
            FetchError::Status { status: 400, detail, .. } => {
                JobError::new(format!("Open-Meteo refused the request: {detail}"))
            }
            other => other.into(),
        })?;
        let mut report = RunReport { bytes_fetched: response.body.len() as u64, ..RunReport::default() };
        let answer: Value = serde_json::from_slice(&response.body)
            .map_err(|e| JobError::new(format!("Open-Meteo answered something else than JSON: {e}")))?;
        let malformed = |what: &str| JobError::new(format!("Open-Meteo's answer has no {what}"));
        let mut items = Vec::new();
        if !self.current.is_empty() {
            let current = answer.get("current").and_then(Value::as_object).ok_or_else(|| malformed("current block"))?;
            let time = current.get("time").and_then(Value::as_i64).ok_or_else(|| malformed("current.time"))?;
            let values = self.current.iter().filter_map(|v| Some((v.clone(), current.get(v)?.clone()))).collect();
            items.push(self.item(
                "current",
                time,
                values,
                answer.get("current_units").unwrap_or(&Value::Null),
                &answer,
            ));
        }
        if !self.hourly.is_empty() {
            let hourly = answer.get("hourly").and_then(Value::as_object).ok_or_else(|| malformed("hourly block"))?;
            let times = hourly.get("time").and_then(Value::as_array).ok_or_else(|| malformed("hourly.time"))?;
            for (i, time) in times.iter().enumerate() {
                let Some(time) = time.as_i64() else { continue };
                let values = self
                    .hourly
                    .iter()
                    .filter_map(|v| Some((v.clone(), hourly.get(v)?.as_array()?.get(i)?.clone())))
                    .collect();
                items.push(self.item(
                    "hourly",
                    time,
                    values,
                    answer.get("hourly_units").unwrap_or(&Value::Null),
                    &answer,
                ));
            }
        }
        // The whole answer is the raw payload of its first document.
        if let Some(first) = items.first_mut() {
            first.raw = Some(response.body.clone());
        }
        report.items_fetched = items.len() as u64;
        let warning = ctx.deliver(items, &mut report).await?;
        Ok(RunOutcome { report, next: NextRun::Interval, warning })
    }
}

#[cfg(test)]
mod tests;
