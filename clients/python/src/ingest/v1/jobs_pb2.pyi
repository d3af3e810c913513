import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]
    JOB_STATE_UNSCHEDULABLE: _ClassVar[JobState]
    JOB_STATE_FAILING: _ClassVar[JobState]

class ParamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAM_KIND_UNSPECIFIED: _ClassVar[ParamKind]
    PARAM_KIND_STRING: _ClassVar[ParamKind]
    PARAM_KIND_INTEGER: _ClassVar[ParamKind]
    PARAM_KIND_NUMBER: _ClassVar[ParamKind]
    PARAM_KIND_BOOLEAN: _ClassVar[ParamKind]
    PARAM_KIND_ENUM: _ClassVar[ParamKind]
    PARAM_KIND_URL: _ClassVar[ParamKind]
    PARAM_KIND_DURATION: _ClassVar[ParamKind]
    PARAM_KIND_LIST: _ClassVar[ParamKind]
    PARAM_KIND_SECRET: _ClassVar[ParamKind]
    PARAM_KIND_JSON: _ClassVar[ParamKind]

class JobEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_TYPE_UNSPECIFIED: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_UPSERTED: _ClassVar[JobEventType]
    JOB_EVENT_TYPE_DELETED: _ClassVar[JobEventType]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_ACTIVE: _ClassVar[WorkerState]
    WORKER_STATE_DRAINING: _ClassVar[WorkerState]

class RunOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_OUTCOME_UNSPECIFIED: _ClassVar[RunOutcome]
    RUN_OUTCOME_SUCCEEDED: _ClassVar[RunOutcome]
    RUN_OUTCOME_WARNING: _ClassVar[RunOutcome]
    RUN_OUTCOME_FAILED: _ClassVar[RunOutcome]

class FeedImport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEED_IMPORT_UNSPECIFIED: _ClassVar[FeedImport]
    FEED_IMPORT_CREATED: _ClassVar[FeedImport]
    FEED_IMPORT_WOULD_CREATE: _ClassVar[FeedImport]
    FEED_IMPORT_DUPLICATE: _ClassVar[FeedImport]
    FEED_IMPORT_INVALID: _ClassVar[FeedImport]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_PAUSED: JobState
JOB_STATE_UNSCHEDULABLE: JobState
JOB_STATE_FAILING: JobState
PARAM_KIND_UNSPECIFIED: ParamKind
PARAM_KIND_STRING: ParamKind
PARAM_KIND_INTEGER: ParamKind
PARAM_KIND_NUMBER: ParamKind
PARAM_KIND_BOOLEAN: ParamKind
PARAM_KIND_ENUM: ParamKind
PARAM_KIND_URL: ParamKind
PARAM_KIND_DURATION: ParamKind
PARAM_KIND_LIST: ParamKind
PARAM_KIND_SECRET: ParamKind
PARAM_KIND_JSON: ParamKind
JOB_EVENT_TYPE_UNSPECIFIED: JobEventType
JOB_EVENT_TYPE_UPSERTED: JobEventType
JOB_EVENT_TYPE_DELETED: JobEventType
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_ACTIVE: WorkerState
WORKER_STATE_DRAINING: WorkerState
RUN_OUTCOME_UNSPECIFIED: RunOutcome
RUN_OUTCOME_SUCCEEDED: RunOutcome
RUN_OUTCOME_WARNING: RunOutcome
RUN_OUTCOME_FAILED: RunOutcome
FEED_IMPORT_UNSPECIFIED: FeedImport
FEED_IMPORT_CREATED: FeedImport
FEED_IMPORT_WOULD_CREATE: FeedImport
FEED_IMPORT_DUPLICATE: FeedImport
FEED_IMPORT_INVALID: FeedImport

class Job(_message.Message):
    __slots__ = ("id", "name", "type", "params", "secret_params_set", "interval", "paused", "revision", "create_time", "update_time", "status", "labels", "schedule")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SECRET_PARAMS_SET_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: str
    params: _struct_pb2.Struct
    secret_params_set: _containers.RepeatedScalarFieldContainer[str]
    interval: _duration_pb2.Duration
    paused: bool
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    status: JobStatus
    labels: _containers.ScalarMap[str, str]
    schedule: Schedule
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., secret_params_set: _Optional[_Iterable[str]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., paused: _Optional[bool] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[JobStatus, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("cron", "time_zone", "windows")
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    cron: str
    time_zone: str
    windows: _containers.RepeatedCompositeFieldContainer[TimeWindow]
    def __init__(self, cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[TimeWindow, _Mapping]]] = ...) -> None: ...

class TimeWindow(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("state", "state_reason", "owner", "epoch", "counters", "last_success_time", "last_error", "next_run_time", "checkpoint", "consecutive_failures")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    state_reason: str
    owner: str
    epoch: int
    counters: JobCounters
    last_success_time: _timestamp_pb2.Timestamp
    last_error: JobError
    next_run_time: _timestamp_pb2.Timestamp
    checkpoint: Checkpoint
    consecutive_failures: int
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., state_reason: _Optional[str] = ..., owner: _Optional[str] = ..., epoch: _Optional[int] = ..., counters: _Optional[_Union[JobCounters, _Mapping]] = ..., last_success_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[_Union[JobError, _Mapping]] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("cursor_bytes", "cursor_preview")
    CURSOR_BYTES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    cursor_bytes: int
    cursor_preview: str
    def __init__(self, cursor_bytes: _Optional[int] = ..., cursor_preview: _Optional[str] = ...) -> None: ...

class JobCounters(_message.Message):
    __slots__ = ("items_fetched", "items_written", "items_failed", "bytes_fetched", "runs", "runs_failed", "items_filtered")
    ITEMS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FAILED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FILTERED_FIELD_NUMBER: _ClassVar[int]
    items_fetched: int
    items_written: int
    items_failed: int
    bytes_fetched: int
    runs: int
    runs_failed: int
    items_filtered: int
    def __init__(self, items_fetched: _Optional[int] = ..., items_written: _Optional[int] = ..., items_failed: _Optional[int] = ..., bytes_fetched: _Optional[int] = ..., runs: _Optional[int] = ..., runs_failed: _Optional[int] = ..., items_filtered: _Optional[int] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("time", "message")
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("job", "job_id", "validate_only")
    JOB_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    job: Job
    job_id: str
    validate_only: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., job_id: _Optional[str] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "type", "state", "label_selector")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    type: str
    state: JobState
    label_selector: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., type: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., label_selector: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateJobRequest(_message.Message):
    __slots__ = ("job", "update_mask")
    JOB_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    job: Job
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("id", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    revision: int
    def __init__(self, id: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PauseJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RunJobNowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RunJobNowResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResetJobCursorRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResetJobCursorResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobTypesResponse(_message.Message):
    __slots__ = ("job_types",)
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    job_types: _containers.RepeatedCompositeFieldContainer[JobType]
    def __init__(self, job_types: _Optional[_Iterable[_Union[JobType, _Mapping]]] = ...) -> None: ...

class JobType(_message.Message):
    __slots__ = ("name", "description", "params", "default_interval", "min_interval", "workers", "rules")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    params: _containers.RepeatedCompositeFieldContainer[ParamSpec]
    default_interval: _duration_pb2.Duration
    min_interval: _duration_pb2.Duration
    workers: _containers.RepeatedScalarFieldContainer[str]
    rules: _containers.RepeatedCompositeFieldContainer[ParamRule]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamSpec, _Mapping]]] = ..., default_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., workers: _Optional[_Iterable[str]] = ..., rules: _Optional[_Iterable[_Union[ParamRule, _Mapping]]] = ...) -> None: ...

class ParamRule(_message.Message):
    __slots__ = ("required_if", "one_of", "any_of")
    REQUIRED_IF_FIELD_NUMBER: _ClassVar[int]
    ONE_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    required_if: ParamRequiredIf
    one_of: ParamOneOf
    any_of: ParamAnyOf
    def __init__(self, required_if: _Optional[_Union[ParamRequiredIf, _Mapping]] = ..., one_of: _Optional[_Union[ParamOneOf, _Mapping]] = ..., any_of: _Optional[_Union[ParamAnyOf, _Mapping]] = ...) -> None: ...

class ParamAnyOf(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, params: _Optional[_Iterable[str]] = ...) -> None: ...

class ParamRequiredIf(_message.Message):
    __slots__ = ("param", "when", "equals")
    PARAM_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    EQUALS_FIELD_NUMBER: _ClassVar[int]
    param: str
    when: str
    equals: str
    def __init__(self, param: _Optional[str] = ..., when: _Optional[str] = ..., equals: _Optional[str] = ...) -> None: ...

class ParamOneOf(_message.Message):
    __slots__ = ("sets", "required")
    SETS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    sets: _containers.RepeatedCompositeFieldContainer[ParamSet]
    required: bool
    def __init__(self, sets: _Optional[_Iterable[_Union[ParamSet, _Mapping]]] = ..., required: _Optional[bool] = ...) -> None: ...

class ParamSet(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, params: _Optional[_Iterable[str]] = ...) -> None: ...

class ParamSpec(_message.Message):
    __slots__ = ("name", "kind", "required", "default_value", "description", "allowed_values", "minimum", "maximum", "max_length", "pattern")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_VALUES_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ParamKind
    required: bool
    default_value: _struct_pb2.Value
    description: str
    allowed_values: _containers.RepeatedScalarFieldContainer[str]
    minimum: float
    maximum: float
    max_length: int
    pattern: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ParamKind, str]] = ..., required: _Optional[bool] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., description: _Optional[str] = ..., allowed_values: _Optional[_Iterable[str]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., max_length: _Optional[int] = ..., pattern: _Optional[str] = ...) -> None: ...

class WatchJobsRequest(_message.Message):
    __slots__ = ("type", "start_revision", "label_selector")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    type: str
    start_revision: int
    label_selector: str
    def __init__(self, type: _Optional[str] = ..., start_revision: _Optional[int] = ..., label_selector: _Optional[str] = ...) -> None: ...

class WatchJobsResponse(_message.Message):
    __slots__ = ("revision", "events", "snapshot", "synced")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    snapshot: bool
    synced: bool
    def __init__(self, revision: _Optional[int] = ..., events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., snapshot: _Optional[bool] = ..., synced: _Optional[bool] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("type", "job")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    type: JobEventType
    job: Job
    def __init__(self, type: _Optional[_Union[JobEventType, str]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("name", "state", "weight", "job_types", "version", "start_time", "jobs_owned", "counters", "cpu_percent", "rss_bytes", "heartbeat_time", "jobs_by_type")
    class JobsByTypeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    JOBS_OWNED_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    JOBS_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: WorkerState
    weight: float
    job_types: _containers.RepeatedScalarFieldContainer[str]
    version: str
    start_time: _timestamp_pb2.Timestamp
    jobs_owned: int
    counters: JobCounters
    cpu_percent: float
    rss_bytes: int
    heartbeat_time: _timestamp_pb2.Timestamp
    jobs_by_type: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., weight: _Optional[float] = ..., job_types: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jobs_owned: _Optional[int] = ..., counters: _Optional[_Union[JobCounters, _Mapping]] = ..., cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jobs_by_type: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PauseJobsRequest(_message.Message):
    __slots__ = ("ids", "label_selector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label_selector: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label_selector: _Optional[str] = ...) -> None: ...

class PauseJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class ResumeJobsRequest(_message.Message):
    __slots__ = ("ids", "label_selector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label_selector: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label_selector: _Optional[str] = ...) -> None: ...

class ResumeJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class RunJobsNowRequest(_message.Message):
    __slots__ = ("ids", "label_selector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label_selector: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label_selector: _Optional[str] = ...) -> None: ...

class RunJobsNowResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class DeleteJobsRequest(_message.Message):
    __slots__ = ("ids", "label_selector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    label_selector: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., label_selector: _Optional[str] = ...) -> None: ...

class DeleteJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("id", "code", "message", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: int
    message: str
    revision: int
    def __init__(self, id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ListJobRunsRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[JobRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[JobRun, _Mapping]]] = ...) -> None: ...

class JobRun(_message.Message):
    __slots__ = ("start_time", "duration", "outcome", "counters", "message", "worker", "epoch", "seq")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    outcome: RunOutcome
    counters: JobCounters
    message: str
    worker: str
    epoch: int
    seq: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., outcome: _Optional[_Union[RunOutcome, str]] = ..., counters: _Optional[_Union[JobCounters, _Mapping]] = ..., message: _Optional[str] = ..., worker: _Optional[str] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class PreviewScheduleRequest(_message.Message):
    __slots__ = ("schedule", "interval", "count")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    schedule: Schedule
    interval: _duration_pb2.Duration
    count: int
    def __init__(self, schedule: _Optional[_Union[Schedule, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class PreviewScheduleResponse(_message.Message):
    __slots__ = ("run_times",)
    RUN_TIMES_FIELD_NUMBER: _ClassVar[int]
    run_times: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    def __init__(self, run_times: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ...) -> None: ...

class ImportOpmlRequest(_message.Message):
    __slots__ = ("opml", "validate_only", "interval", "labels", "paused")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OPML_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    opml: str
    validate_only: bool
    interval: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    paused: bool
    def __init__(self, opml: _Optional[str] = ..., validate_only: _Optional[bool] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., paused: _Optional[bool] = ...) -> None: ...

class ImportOpmlResponse(_message.Message):
    __slots__ = ("feeds",)
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    feeds: _containers.RepeatedCompositeFieldContainer[ImportedFeed]
    def __init__(self, feeds: _Optional[_Iterable[_Union[ImportedFeed, _Mapping]]] = ...) -> None: ...

class ImportedFeed(_message.Message):
    __slots__ = ("url", "title", "outcome", "job_id", "message")
    URL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    url: str
    title: str
    outcome: FeedImport
    job_id: str
    message: str
    def __init__(self, url: _Optional[str] = ..., title: _Optional[str] = ..., outcome: _Optional[_Union[FeedImport, str]] = ..., job_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ExportOpmlRequest(_message.Message):
    __slots__ = ("label_selector",)
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    label_selector: str
    def __init__(self, label_selector: _Optional[str] = ...) -> None: ...

class ExportOpmlResponse(_message.Message):
    __slots__ = ("opml",)
    OPML_FIELD_NUMBER: _ClassVar[int]
    opml: str
    def __init__(self, opml: _Optional[str] = ...) -> None: ...

class ExportJobsRequest(_message.Message):
    __slots__ = ("label_selector",)
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    label_selector: str
    def __init__(self, label_selector: _Optional[str] = ...) -> None: ...

class ExportJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ImportJobsRequest(_message.Message):
    __slots__ = ("jobs", "validate_only")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    validate_only: bool
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class ImportJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class PreviewJobRequest(_message.Message):
    __slots__ = ("job", "max_documents", "timeout")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    max_documents: int
    timeout: _duration_pb2.Duration
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., max_documents: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PreviewJobResponse(_message.Message):
    __slots__ = ("documents", "documents_total", "objects", "object_bytes", "counters", "warnings", "error", "cursor", "duration", "worker", "truncated")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[PreviewDocument]
    documents_total: int
    objects: int
    object_bytes: int
    counters: JobCounters
    warnings: _containers.RepeatedScalarFieldContainer[str]
    error: str
    cursor: _struct_pb2.Value
    duration: _duration_pb2.Duration
    worker: str
    truncated: bool
    def __init__(self, documents: _Optional[_Iterable[_Union[PreviewDocument, _Mapping]]] = ..., documents_total: _Optional[int] = ..., objects: _Optional[int] = ..., object_bytes: _Optional[int] = ..., counters: _Optional[_Union[JobCounters, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., cursor: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., worker: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class PreviewDocument(_message.Message):
    __slots__ = ("id", "index", "document")
    ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    index: str
    document: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., index: _Optional[str] = ..., document: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("letter_id", "document_id", "index", "status", "reason", "time", "object_key", "bytes", "replay_pending", "preview")
    LETTER_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLAY_PENDING_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    letter_id: str
    document_id: str
    index: str
    status: int
    reason: str
    time: _timestamp_pb2.Timestamp
    object_key: str
    bytes: int
    replay_pending: bool
    preview: str
    def __init__(self, letter_id: _Optional[str] = ..., document_id: _Optional[str] = ..., index: _Optional[str] = ..., status: _Optional[int] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., object_key: _Optional[str] = ..., bytes: _Optional[int] = ..., replay_pending: _Optional[bool] = ..., preview: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token", "total")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    total: int
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class GetDeadLetterRequest(_message.Message):
    __slots__ = ("job_id", "letter_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LETTER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    letter_id: str
    def __init__(self, job_id: _Optional[str] = ..., letter_id: _Optional[str] = ...) -> None: ...

class GetDeadLetterResponse(_message.Message):
    __slots__ = ("dead_letter",)
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    dead_letter: DeadLetter
    def __init__(self, dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ...) -> None: ...

class ReplayDeadLettersRequest(_message.Message):
    __slots__ = ("job_id", "letter_ids")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LETTER_IDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    letter_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., letter_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplayDeadLettersResponse(_message.Message):
    __slots__ = ("queued",)
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    def __init__(self, queued: _Optional[int] = ...) -> None: ...

class PurgeDeadLettersRequest(_message.Message):
    __slots__ = ("job_id", "letter_ids")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LETTER_IDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    letter_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., letter_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
