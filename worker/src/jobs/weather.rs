//! `weather`: current conditions and an hourly forecast for one place from
//! Open-Meteo (`/v1/forecast`, no key). One document per place, kind and
//! time, with that as its `_id`: a newer forecast for the same hour replaces
//! the older one.

use std::time::Duration;

use async_trait::async_trait;
use ingest_model::{JobTypeSpec, ParamKind, ParamRule, ParamSpec};
use ingest_sinks::Item;
use serde_json::{Map, Value, json};
use url::Url;

use super::{Job, JobError, NextRun, Params, RunContext, RunOutcome, RunReport};
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

pub fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: NAME.to_string(),
        description: "Current weather and an hourly forecast for a place, from Open-Meteo.".to_string(),
        params: vec![
            ParamSpec::new("latitude", ParamKind::Number, "Latitude in degrees.")
                .required()
                .bounds(Some(-90.0), Some(90.0)),
            ParamSpec::new("longitude", ParamKind::Number, "Longitude in degrees.")
                .required()
                .bounds(Some(-180.0), Some(180.0)),
            ParamSpec::new("place", ParamKind::String, "A name for the place, copied into every document.")
                .max_length(200),
            ParamSpec::new("current", ParamKind::List, "Current-conditions variables.")
                .allowed(VARIABLES)
                .default_value(json!([
                    "temperature_2m",
                    "relative_humidity_2m",
                    "precipitation",
                    "weather_code",
                    "wind_speed_10m"
                ])),
            ParamSpec::new("hourly", ParamKind::List, "Hourly forecast variables (none: no forecast).")
                .allowed(VARIABLES)
                .default_value(json!([])),
            ParamSpec::new("forecast_days", ParamKind::Integer, "Days of hourly forecast.")
                .default_value(1)
                .bounds(Some(1.0), Some(16.0)),
            ParamSpec::new("base_url", ParamKind::Url, "The API's base URL.")
                .default_value("https://api.open-meteo.com/v1/"),
        ],
        default_interval: Duration::from_secs(15 * 60),
        min_interval: Duration::from_secs(60),
        rules: vec![ParamRule::any_of(&["current", "hourly"])],
    }
}

pub fn properties() -> Value {
    json!({
        "place": {"type": "keyword"}, "location": {"type": "geo_point"}, "kind": {"type": "keyword"},
        "time": {"type": "date"}, "values": {"type": "object", "dynamic": true}, "units": {"type": "object", "enabled": false},
        "elevation": {"type": "float"},
    })
}

pub struct Weather {
    latitude: f64,
    longitude: f64,
    place: Option<String>,
    current: Vec<String>,
    hourly: Vec<String>,
    forecast_days: i64,
    base: Url,
}

pub fn build(params: &Params<'_>) -> Result<Box<dyn Job>, String> {
    let number = |name: &str| params.number(name).ok_or(format!("{name} is required"));
    let list = |name: &str| params.list(name).into_iter().map(String::from).collect::<Vec<_>>();
    let base = params.base_url("base_url")?;
    // At least one of them: the spec's rule, checked by control.
    let (current, hourly) = (list("current"), list("hourly"));
    Ok(Box::new(Weather {
        latitude: number("latitude")?,
        longitude: number("longitude")?,
        place: params.string("place").map(String::from),
        current,
        hourly,
        forecast_days: params.integer("forecast_days").unwrap_or(1),
        base,
    }))
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
