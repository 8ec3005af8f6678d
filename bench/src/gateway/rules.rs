//! The 20 rules Tollgate runs in the gateway benchmark. Every one applies
//! to the bench's calls (org `acme`, project `bench`, user `load`, model
//! `openai/gpt-4o-mini`), so each request is admitted and settled against
//! all of them: budgets on every metric over calendar days in several time
//! zones and rolling windows, rate limits, model allow/deny lists, a region
//! lock and CEL rules. Limits are far above what a run uses: the figures
//! are the allow path, and the bench checks that nothing was refused.

pub const GATEWAY_RULES: &str = r#"
[[rules]]
id = "org-daily-cost"
type = "budget"
metric = "cost_usd"
limit = 1000000
scope = ["org"]
window = "day"
action = "block"

[[rules]]
id = "project-daily-tokens"
type = "budget"
metric = "tokens"
limit = 50000000000
scope = ["project"]
window = "day"
time_zone = "America/New_York"
action = "block"

[[rules]]
id = "project-monthly-cost"
type = "budget"
metric = "cost_usd"
limit = 10000000
scope = ["project"]
window = "month"
action = "alert"

[[rules]]
id = "user-rolling-cost"
type = "budget"
metric = "cost_usd"
limit = 100000
scope = ["user"]
window = "day"
rolling = true
action = "block"

[[rules]]
id = "user-hourly-tokens"
type = "budget"
metric = "tokens"
limit = 10000000000
scope = ["user"]
window = "hour"
action = "block"

[[rules]]
id = "key-daily-requests"
type = "budget"
metric = "requests"
limit = 1000000000
scope = ["key"]
window = "day"
time_zone = "Europe/Berlin"
action = "block"

[[rules]]
id = "model-daily-requests"
type = "budget"
metric = "requests"
limit = 1000000000
scope = ["model"]
window = "day"
alert_at = [0.5, 0.9]
action = "alert"

[[rules]]
id = "provider-weekly-tokens"
type = "budget"
metric = "tokens"
limit = 100000000000
scope = ["provider"]
window = "week"
action = "alert"

[[rules]]
id = "project-user-rolling-tokens"
type = "budget"
metric = "tokens"
limit = 50000000000
scope = ["project", "user"]
window = "day"
rolling = true
action = "block"

[[rules]]
id = "session-daily-tokens"
type = "budget"
metric = "tokens"
limit = 50000000000
scope = ["project", "session"]
window = "day"
time_zone = "Asia/Tokyo"
action = "log"

[[rules]]
id = "tier"
type = "budget"
tier = "business"
scope = ["org", "project"]
action = "alert"

[[rules]]
id = "user-rate"
type = "rate_limit"
scope = ["user"]
requests_per_minute = 100000000
tokens_per_minute = 100000000000

[[rules]]
id = "project-rate"
type = "rate_limit"
scope = ["project"]
requests_per_minute = 100000000

[[rules]]
id = "key-rate"
type = "rate_limit"
scope = ["key"]
tokens_per_minute = 100000000000

[[rules]]
id = "approved-models"
type = "model_access"
allow = ["openai/*", "anthropic/claude-*", "gcp.gemini/gemini-*"]
deny = ["*gpt-4.5*", "*-preview*"]

[[rules]]
id = "project-model-deny"
type = "model_access"
deny = ["openai/o1-pro*", "anthropic/claude-opus-*"]
match = { project = "bench" }

[[rules]]
id = "us-or-eu-only"
type = "region"
allowed = ["us-*", "eu-*"]

[[rules]]
id = "long-outputs"
type = "custom"
expression = 'call.output_tokens > 8000 && call.model.startsWith("gpt-4")'
action = "alert"

[[rules]]
id = "costly-call"
type = "custom"
expression = 'call.cost_usd > 2.0 && call.environment != "batch"'
action = "block"

[[rules]]
id = "acme-daily-requests"
type = "budget"
metric = "requests"
limit = 1000000000
scope = ["org", "user"]
window = "day"
match = { org = "acme" }
action = "block"
"#;
