-- A history database as the edgepack of commit b428277 wrote it (history schema 3,
-- history.py before the store/backend split): one session, devices A and B, a pass,
-- a fail and an error run. Made by sqlite3's iterdump(); PRAGMA user_version added.
PRAGMA user_version = 3;
BEGIN TRANSACTION;
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    bundle_sha256 TEXT NOT NULL,
    bundle_name TEXT NOT NULL,
    device_serial TEXT NOT NULL,
    device_model TEXT,
    device_abi TEXT,
    device_sdk INTEGER,
    device_json TEXT,
    config_key TEXT NOT NULL,
    config_json TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
    error TEXT,
    engine TEXT,
    runner_version TEXT,
    ort_version TEXT,
    ep_used TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    latencies_json TEXT NOT NULL DEFAULT '[]',
    n INTEGER NOT NULL DEFAULT 0,
    mean_ms REAL, median_ms REAL, std_ms REAL, min_ms REAL, max_ms REAL,
    p90_ms REAL, p95_ms REAL, p99_ms REAL, cv REAL,
    session_create_ms REAL,
    first_inference_ms REAL,
    peak_rss_kb INTEGER,
    state_before_json TEXT,
    state_after_json TEXT,
    warnings_json TEXT NOT NULL DEFAULT '[]',
    profile_json TEXT NOT NULL DEFAULT '[]'
, result_json TEXT);
INSERT INTO "runs" VALUES(1,'0123456789ab','abababababababababababababababababababababababababababababababab','picture','A','Pixel 7','arm64-v8a',34,'{"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Pixel 7", "release": null, "runner_target": null, "sdk": 34, "serial": "A", "soc": null, "state": "device", "virtual": true}','cpu/t1','{"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}',0,'pass',NULL,'native','0.1.0','1.32.0','cpu','2025-03-01T10:00:01.000+00:00','2025-03-01T10:00:02.000+00:00','[10.0, 11.0, 10.5, 12.0, 10.25]',5,10.75,10.5,7.90569415042094880696e-01,10.0,12.0,11.6,11.8,11.96,7.35413409341483664816e-02,12.5,3.25,51200,'{"battery_level": 80, "battery_temp_c": 30.5, "cpus": [{"cpu": "cpu0", "cur_khz": 1800000, "governor": "schedutil", "hw_max_khz": 2400000, "max_khz": 2400000}], "powered": "usb", "taken_at": "2025-03-01T10:00:00.500+00:00", "temps_c": {"cpu0": 41.0}, "thermal_status": 0}','{"battery_level": 80, "battery_temp_c": 30.5, "cpus": [{"cpu": "cpu0", "cur_khz": 1800000, "governor": "schedutil", "hw_max_khz": 2400000, "max_khz": 2400000}], "powered": "usb", "taken_at": "2025-03-01T10:00:00.500+00:00", "temps_c": {"cpu0": 41.0}, "thermal_status": 0}','["heated 2.5 C"]','[{"calls": 10, "iterations": 5, "op_type": "Conv", "provider": "CPUExecutionProvider", "share": 0.75, "total_ms": 4.5}]','{"bundle_name": "picture", "bundle_sha256": "abababababababababababababababababababababababababababababababab", "config": {"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}, "device": {"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Pixel 7", "release": null, "runner_target": null, "sdk": 34, "serial": "A", "soc": null, "state": "device", "virtual": true}, "engine": "native", "notes": [], "run_s": 0.5, "runner_target": "android-arm64-v8a", "sets": [{"index": 0, "runner": {"engine": "native", "ep_fallback_reason": null, "ep_requested": "cpu", "ep_used": "cpu", "extra": {}, "first_inference_ms": 3.25, "inputs": [{"dtype": "float32", "name": "input", "shape": [1, 1, 28, 28]}], "latencies_ms": [10.0, 11.0, 10.5, 12.0, 10.25], "onnxruntime_version": "1.32.0", "optimization": "all", "outputs": [{"dtype": "float32", "name": "output", "shape": [1, 1, 28, 28]}], "peak_rss_kb_after_load": 40000, "peak_rss_kb_end": 51200, "peak_rss_scope": "process", "profile_file": null, "runner_version": "0.1.0", "session_create_ms": 12.5, "threads": 1, "threads_used": null}, "verdicts": [{"actual_dtype": "float32", "actual_shape": [1, 1, 28, 28], "expected_dtype": "float32", "expected_shape": [1, 1, 28, 28], "metrics": {"compared": null, "cosine_similarity": 1.0, "max_abs_error": 0.0, "max_rel_error": 0.0, "mean_abs_error": 0.0, "mismatched": 0, "nonfinite": null, "snr_db": "inf", "top1_agreement": null, "top5_agreement": null, "total": 784}, "name": "output", "passed": true, "reason": "within tolerance", "tolerance": {"atol": 0.0001, "rtol": 0.001}}]}], "started_at": "2025-01-01T00:00:00+00:00", "stats": {"count": 5, "cv": 0.07354134093414837, "max_ms": 12.0, "mean_ms": 10.75, "median_ms": 10.5, "min_ms": 10.0, "outliers": 0, "p90_ms": 11.6, "p95_ms": 11.8, "p99_ms": 11.96, "q1_ms": 10.25, "q3_ms": 11.0, "spread": 0.07142857142857142, "std_ms": 0.7905694150420949}, "transfer": {"bytes_pushed": 0, "bytes_skipped": 0, "files_pushed": 0, "files_skipped": 0, "pull_s": 0.0, "push_s": 0.0}, "wall_s": 1.0}');
INSERT INTO "runs" VALUES(2,'0123456789ab','abababababababababababababababababababababababababababababababab','picture','B','Galaxy S23','arm64-v8a',34,'{"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Galaxy S23", "release": null, "runner_target": null, "sdk": 34, "serial": "B", "soc": null, "state": "device", "virtual": true}','cpu/t1','{"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}',0,'fail',NULL,'native','0.1.0','1.32.0','cpu','2025-03-01T10:00:01.000+00:00','2025-03-01T10:00:03.000+00:00','[20.0, 21.0, 19.5, 22.0, 20.5]',5,20.6,20.5,9.61769203083567170153e-01,19.5,22.0,21.6,21.8,21.96,4.66878253924061722979e-02,12.5,3.25,51200,NULL,NULL,'[]','[]','{"bundle_name": "picture", "bundle_sha256": "abababababababababababababababababababababababababababababababab", "config": {"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}, "device": {"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Galaxy S23", "release": null, "runner_target": null, "sdk": 34, "serial": "B", "soc": null, "state": "device", "virtual": true}, "engine": "native", "notes": [], "run_s": 0.5, "runner_target": "android-arm64-v8a", "sets": [{"index": 0, "runner": {"engine": "native", "ep_fallback_reason": null, "ep_requested": "cpu", "ep_used": "cpu", "extra": {}, "first_inference_ms": 3.25, "inputs": [{"dtype": "float32", "name": "input", "shape": [1, 1, 28, 28]}], "latencies_ms": [20.0, 21.0, 19.5, 22.0, 20.5], "onnxruntime_version": "1.32.0", "optimization": "all", "outputs": [{"dtype": "float32", "name": "output", "shape": [1, 1, 28, 28]}], "peak_rss_kb_after_load": 40000, "peak_rss_kb_end": 51200, "peak_rss_scope": "process", "profile_file": null, "runner_version": "0.1.0", "session_create_ms": 12.5, "threads": 1, "threads_used": null}, "verdicts": [{"actual_dtype": "float32", "actual_shape": [1, 1, 28, 28], "expected_dtype": "float32", "expected_shape": [1, 1, 28, 28], "metrics": {"compared": null, "cosine_similarity": 1.0, "max_abs_error": 0.5, "max_rel_error": 1.0, "mean_abs_error": 0.1, "mismatched": 7, "nonfinite": null, "snr_db": 3.0, "top1_agreement": null, "top5_agreement": null, "total": 784}, "name": "output", "passed": false, "reason": "7 of 784 elements beyond rtol=0.001 atol=0.0001", "tolerance": {"atol": 0.0001, "rtol": 0.001}}]}], "started_at": "2025-01-01T00:00:00+00:00", "stats": {"count": 5, "cv": 0.04668782539240617, "max_ms": 22.0, "mean_ms": 20.6, "median_ms": 20.5, "min_ms": 19.5, "outliers": 0, "p90_ms": 21.6, "p95_ms": 21.8, "p99_ms": 21.96, "q1_ms": 20.0, "q3_ms": 21.0, "spread": 0.04878048780487805, "std_ms": 0.9617692030835672}, "transfer": {"bytes_pushed": 0, "bytes_skipped": 0, "files_pushed": 0, "files_skipped": 0, "pull_s": 0.0, "push_s": 0.0}, "wall_s": 1.0}');
INSERT INTO "runs" VALUES(3,'0123456789ab','abababababababababababababababababababababababababababababababab','picture','A','Pixel 7','arm64-v8a',34,'{"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Pixel 7", "release": null, "runner_target": null, "sdk": 34, "serial": "A", "soc": null, "state": "device", "virtual": true}','cpu/t1','{"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}',1,'pass',NULL,'native','0.1.0','1.32.0','cpu','2025-03-01T10:00:03.000+00:00','2025-03-01T10:00:04.000+00:00','[10.5, 10.0, 11.5, 10.75, 10.0]',5,10.55,10.5,6.22494979899436584602e-01,10.0,11.5,11.2,11.35,11.47,5.90042634975769253458e-02,12.5,3.25,51200,NULL,NULL,'[]','[]','{"bundle_name": "picture", "bundle_sha256": "abababababababababababababababababababababababababababababababab", "config": {"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}, "device": {"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Pixel 7", "release": null, "runner_target": null, "sdk": 34, "serial": "A", "soc": null, "state": "device", "virtual": true}, "engine": "native", "notes": [], "run_s": 0.5, "runner_target": "android-arm64-v8a", "sets": [{"index": 0, "runner": {"engine": "native", "ep_fallback_reason": null, "ep_requested": "cpu", "ep_used": "cpu", "extra": {}, "first_inference_ms": 3.25, "inputs": [{"dtype": "float32", "name": "input", "shape": [1, 1, 28, 28]}], "latencies_ms": [10.5, 10.0, 11.5, 10.75, 10.0], "onnxruntime_version": "1.32.0", "optimization": "all", "outputs": [{"dtype": "float32", "name": "output", "shape": [1, 1, 28, 28]}], "peak_rss_kb_after_load": 40000, "peak_rss_kb_end": 51200, "peak_rss_scope": "process", "profile_file": null, "runner_version": "0.1.0", "session_create_ms": 12.5, "threads": 1, "threads_used": null}, "verdicts": [{"actual_dtype": "float32", "actual_shape": [1, 1, 28, 28], "expected_dtype": "float32", "expected_shape": [1, 1, 28, 28], "metrics": {"compared": null, "cosine_similarity": 1.0, "max_abs_error": 0.0, "max_rel_error": 0.0, "mean_abs_error": 0.0, "mismatched": 0, "nonfinite": null, "snr_db": "inf", "top1_agreement": null, "top5_agreement": null, "total": 784}, "name": "output", "passed": true, "reason": "within tolerance", "tolerance": {"atol": 0.0001, "rtol": 0.001}}]}], "started_at": "2025-01-01T00:00:00+00:00", "stats": {"count": 5, "cv": 0.059004263497576925, "max_ms": 11.5, "mean_ms": 10.55, "median_ms": 10.5, "min_ms": 10.0, "outliers": 0, "p90_ms": 11.2, "p95_ms": 11.35, "p99_ms": 11.47, "q1_ms": 10.0, "q3_ms": 10.75, "spread": 0.07142857142857142, "std_ms": 0.6224949798994366}, "transfer": {"bytes_pushed": 0, "bytes_skipped": 0, "files_pushed": 0, "files_skipped": 0, "pull_s": 0.0, "push_s": 0.0}, "wall_s": 1.0}');
INSERT INTO "runs" VALUES(4,'0123456789ab','abababababababababababababababababababababababababababababababab','picture','B','Galaxy S23','arm64-v8a',34,'{"abis": ["arm64-v8a"], "free_bytes": null, "glibc": null, "kind": "android", "machine": null, "manufacturer": "Google", "model": "Galaxy S23", "release": null, "runner_target": null, "sdk": 34, "serial": "B", "soc": null, "state": "device", "virtual": true}','cpu/t1','{"cpu_affinity": null, "ep": "cpu", "iterations": 5, "min_seconds": null, "nnapi_cpu_disabled": false, "nnapi_fp16": false, "optimization": "all", "profile": false, "threads": 1, "timeout_s": 600.0, "warmup": 1}',1,'error','not run: device lost',NULL,NULL,NULL,NULL,'2025-03-01T10:00:05.000+00:00','2025-03-01T10:00:05.000+00:00','[]',0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'[]','[]',NULL);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    label TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    edgepack_version TEXT,
    params_json TEXT NOT NULL
);
INSERT INTO "sessions" VALUES('0123456789ab','main','2025-03-01T10:00:00.000+00:00','2025-03-01T10:00:06.000+00:00',0,'vm','0.1.0','{"bundles": [{"name": "picture", "path": "/lab/picture", "sha256": "abababababababababababababababababababababababababababababababab"}], "params": {"cooldown_s": 0.0, "cpu_affinity": null, "eps": ["cpu"], "iterations": 5, "optimization": "all", "probe_state": true, "profile": false, "repeat": 2, "run_deadline_s": null, "threads": [1], "timeout_s": 600.0, "top_ops": 10, "warmup": 1}, "serials": ["A", "B"]}');
CREATE TABLE verdicts (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    set_index INTEGER NOT NULL,
    output TEXT NOT NULL,
    passed INTEGER NOT NULL,
    reason TEXT,
    max_abs_error REAL, max_rel_error REAL, mean_abs_error REAL, cosine_similarity REAL,
    snr_db REAL, mismatched INTEGER, total INTEGER, top1_agreement REAL, top5_agreement REAL,
    PRIMARY KEY (run_id, set_index, output)
);
INSERT INTO "verdicts" VALUES(1,0,'output',1,'within tolerance',0.0,0.0,0.0,1.0,'inf',0,784,NULL,NULL);
INSERT INTO "verdicts" VALUES(2,0,'output',0,'7 of 784 elements beyond rtol=0.001 atol=0.0001',0.5,1.0,0.1,1.0,3.0,7,784,NULL,NULL);
INSERT INTO "verdicts" VALUES(3,0,'output',1,'within tolerance',0.0,0.0,0.0,1.0,'inf',0,784,NULL,NULL);
CREATE INDEX runs_by_bundle ON runs (bundle_sha256, started_at);
CREATE INDEX runs_by_name ON runs (bundle_name, started_at);
CREATE INDEX runs_by_model ON runs (device_model, config_key, started_at);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX sessions_by_label ON sessions (label, started_at);
COMMIT;
