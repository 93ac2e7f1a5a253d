//! ListConfigResources (api 74): the resources DescribeConfigs can be asked
//! about. Version 0 was ListClientMetricsResources (KIP-714) and lists only
//! client-metrics subscriptions; version 1 (KIP-1142, Kafka 4.1) takes a list
//! of resource types, empty meaning every type the broker supports, and
//! fails the request with UNSUPPORTED_VERSION if it names any other type.

use std::sync::Arc;

use weir_protocol::error_code::ErrorCode;
use weir_protocol::messages::list_config_resources::{
    ConfigResource, ListConfigResourcesRequest, ListConfigResourcesResponse,
};

use crate::Broker;

/// Kafka's ConfigResource.Type codes.
const RESOURCE_TYPE_TOPIC: i8 = 2;
const RESOURCE_TYPE_BROKER: i8 = 4;
const RESOURCE_TYPE_BROKER_LOGGER: i8 = 8;
const RESOURCE_TYPE_CLIENT_METRICS: i8 = 16;
const RESOURCE_TYPE_GROUP: i8 = 32;

/// The types a v1 request may name, in the order they are listed.
const SUPPORTED_TYPES_V1: [i8; 5] = [
    RESOURCE_TYPE_CLIENT_METRICS,
    RESOURCE_TYPE_BROKER_LOGGER,
    RESOURCE_TYPE_BROKER,
    RESOURCE_TYPE_TOPIC,
    RESOURCE_TYPE_GROUP,
];

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    let types: Vec<i8> = if version == 0 {
        vec![RESOURCE_TYPE_CLIENT_METRICS]
    } else if request.resource_types.is_empty() {
        SUPPORTED_TYPES_V1.to_vec()
    } else {
        request.resource_types
    };
    if types.iter().any(|t| !SUPPORTED_TYPES_V1.contains(t)) {
        return ListConfigResourcesResponse {
            error_code: ErrorCode::UnsupportedVersion.code(),
            ..Default::default()
        };
    }
    let resource = |resource_type: i8, resource_name: String| ConfigResource {
        resource_name,
        resource_type,
    };
    let mut resources = Vec::new();
    // Walk the supported types in a fixed order, not the request's, so each
    // is listed once however often it was named.
    for &resource_type in SUPPORTED_TYPES_V1.iter().filter(|t| types.contains(t)) {
        match resource_type {
            // Weir has no client-metrics subscriptions (KIP-714 telemetry).
            RESOURCE_TYPE_CLIENT_METRICS => {}
            RESOURCE_TYPE_BROKER | RESOURCE_TYPE_BROKER_LOGGER => {
                resources.push(resource(resource_type, broker.config.node_id.to_string()));
            }
            RESOURCE_TYPE_TOPIC => {
                let mut names: Vec<String> =
                    broker.registry().iter().map(|t| t.name.clone()).collect();
                names.sort();
                resources.extend(names.into_iter().map(|n| resource(resource_type, n)));
            }
            RESOURCE_TYPE_GROUP => {
                let mut ids: Vec<String> = broker
                    .groups
                    .list()
                    .into_iter()
                    .map(|g| g.group_id)
                    .collect();
                ids.sort();
                resources.extend(ids.into_iter().map(|id| resource(resource_type, id)));
            }
            _ => {}
        }
    }
    ListConfigResourcesResponse {
        throttle_time_ms: 0,
        error_code: ErrorCode::None.code(),
        config_resources: resources,
    }
}
