//! The gateway's shared state, built once from the validated config, and how
//! a request's `model` becomes a chain of links to try.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tollgate_rules::pricing::ModelPrice;

use super::limits::KeyLimiter;
use crate::GatewayDeps;
use crate::config::ValidConfig;
use crate::error::GatewayError;
use crate::internal_events::InternalEvents;
use crate::providers::{Provider, client_tls};

/// One provider/model pair a call may be sent to.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    pub timeout: Duration,
    pub weight: u32,
}

#[derive(Debug)]
pub(crate) struct Route {
    pub name: Arc<str>,
    pub links: Vec<Link>,
    pub retries: u32,
    pub backoff: Duration,
    pub weighted: bool,
}

/// What one request will try, in order.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The route the request named, if it named one.
    pub route: Option<Arc<str>>,
    pub links: Vec<Link>,
    pub retries: u32,
    pub backoff: Duration,
}

pub(crate) struct Shared {
    pub providers: Vec<Arc<Provider>>,
    pub routes: HashMap<String, Arc<Route>>,
    /// Route names in config order, for `/v1/models`.
    pub route_order: Vec<Arc<str>>,
    pub default_max_tokens: u64,
    /// An image's worst case unless its model bills more (`worst_case`).
    pub image_input_tokens: u64,
    /// Input reserved for what a Responses call's stored state may add.
    pub unseen_input_tokens: u64,
    /// The price of models the table lacks, when one is configured.
    pub unpriced_price: Option<ModelPrice>,
    pub max_request_bytes: usize,
    pub deps: GatewayDeps,
    pub key_limits: KeyLimiter,
    pub events: InternalEvents,
}

impl Shared {
    pub(crate) fn new(config: &ValidConfig, deps: GatewayDeps) -> Result<Self, GatewayError> {
        let tls = client_tls(&config.extra_roots)?;
        let providers = config
            .providers
            .iter()
            .map(|p| Provider::build(p, &config.breaker, &tls).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut routes = HashMap::with_capacity(config.routes.len());
        let mut route_order = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let links = r
                .targets
                .iter()
                .filter_map(|t| {
                    let provider = providers.get(t.provider)?;
                    Some(Link {
                        provider: Arc::clone(provider),
                        model: Arc::from(t.model.as_str()),
                        timeout: t.timeout.unwrap_or(provider.timeout),
                        weight: t.weight,
                    })
                })
                .collect();
            let name: Arc<str> = Arc::from(r.name.as_str());
            route_order.push(Arc::clone(&name));
            routes.insert(
                r.name.clone(),
                Arc::new(Route {
                    name,
                    links,
                    retries: r.retries,
                    backoff: r.backoff,
                    weighted: r.weighted,
                }),
            );
        }
        Ok(Self {
            providers,
            routes,
            route_order,
            default_max_tokens: config.default_max_tokens,
            image_input_tokens: config.image_input_tokens,
            unseen_input_tokens: config.unseen_input_tokens,
            unpriced_price: config.unpriced_price.clone(),
            max_request_bytes: config.max_request_bytes,
            deps,
            key_limits: KeyLimiter::default(),
            events: InternalEvents::default(),
        })
    }

    /// `model` as a route name, `provider/model`, or a bare model some
    /// provider lists (first in config order).
    pub(crate) fn resolve(&self, model: &str) -> Option<Chain> {
        if let Some(route) = self.routes.get(model) {
            return Some(Chain {
                route: Some(Arc::clone(&route.name)),
                links: ordered(route),
                retries: route.retries,
                backoff: route.backoff,
            });
        }
        let direct = |provider: &Arc<Provider>, model: &str| Chain {
            route: None,
            links: vec![Link {
                provider: Arc::clone(provider),
                model: Arc::from(model),
                timeout: provider.timeout,
                weight: 1,
            }],
            retries: 0,
            backoff: Duration::ZERO,
        };
        if let Some((prefix, rest)) = model.split_once('/')
            && !rest.is_empty()
            && let Some(p) = self.providers.iter().find(|p| &*p.name == prefix)
        {
            return Some(direct(p, rest));
        }
        self.providers
            .iter()
            .find(|p| p.serves(model))
            .map(|p| direct(p, model))
    }
}

/// A route's links for one request: in order, or with the first drawn by
/// weight and the others following in order.
fn ordered(route: &Route) -> Vec<Link> {
    let mut links = route.links.clone();
    if route.weighted && links.len() > 1 {
        let total: u64 = links.iter().map(|l| u64::from(l.weight)).sum();
        let mut draw = rand::rng().random_range(0..total.max(1));
        let mut first = 0;
        for (i, l) in links.iter().enumerate() {
            if draw < u64::from(l.weight) {
                first = i;
                break;
            }
            draw -= u64::from(l.weight);
        }
        let chosen = links.remove(first);
        links.insert(0, chosen);
    }
    links
}
