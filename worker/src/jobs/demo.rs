//! `demo`: emits synthetic items. Exercises the scheduler end to end without
//! touching the outside world.

use std::time::Duration;

use ingest_model::{JobTypeSpec, ParamKind, ParamSpec};

pub const NAME: &str = "demo";

pub fn spec() -> JobTypeSpec {
    JobTypeSpec {
        name: NAME.to_string(),
        description: "Emits synthetic items; for trying the system out and for tests.".to_string(),
        params: vec![
            ParamSpec::new("items_per_run", ParamKind::Integer, "Items emitted per run.")
                .default_value(10)
                .bounds(Some(1.0), Some(10_000.0)),
            ParamSpec::new("item_bytes", ParamKind::Integer, "Size of each item's payload, in bytes.")
                .default_value(256)
                .bounds(Some(0.0), Some(1_048_576.0)),
            ParamSpec::new(
                "fail_every",
                ParamKind::Integer,
                "Fail every n-th run (0: never), to exercise error handling.",
            )
            .default_value(0)
            .bounds(Some(0.0), Some(1_000_000.0)),
            ParamSpec::new("topic", ParamKind::String, "A label copied into every item.").max_length(200),
            ParamSpec::new("mode", ParamKind::Enum, "How item ids are made.")
                .allowed(&["sequential", "random"])
                .default_value("sequential"),
            ParamSpec::new("token", ParamKind::Secret, "An example secret: stored apart, never returned."),
        ],
        default_interval: Duration::from_secs(60),
        min_interval: Duration::from_secs(1),
    }
}
