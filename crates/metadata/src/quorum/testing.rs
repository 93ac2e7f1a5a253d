//! A small image and controller for testing the quorum without the real
//! ones: topics by name, created by `CreateTopics`. Used by this crate's
//! tests and the transport's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ControllerFactory, ControllerLogic, ImageState};
use crate::controller::{
    ControllerError, ControllerRequest, ControllerResponse, Decision, ItemResult,
};
use crate::records::MetadataRecord;

/// Kafka's TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestImage {
    /// Topic name -> the index of the entry that created it.
    pub topics: BTreeMap<String, u64>,
    pub no_ops: u64,
    pub last_index: u64,
}

impl ImageState for TestImage {
    fn apply_metadata_record(&mut self, index: u64, record: &MetadataRecord) -> Result<(), String> {
        if index < self.last_index {
            return Err(format!("index {index} after {}", self.last_index));
        }
        self.last_index = index;
        match record {
            MetadataRecord::NoOp => self.no_ops += 1,
            MetadataRecord::Topic { name, .. } => {
                if self.topics.insert(name.clone(), index).is_some() {
                    return Err(format!("topic {name} exists"));
                }
            }
            other => return Err(format!("test image ignores {other:?}")),
        }
        Ok(())
    }
    fn to_snapshot_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain struct encodes")
    }
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Creates topics that do not exist yet; refuses everything else.
#[derive(Debug, Default)]
pub struct TestController;

impl ControllerLogic<TestImage> for TestController {
    fn handle(
        &mut self,
        image: &TestImage,
        _now_ms: u64,
        request: &ControllerRequest,
    ) -> Result<Decision, ControllerError> {
        let ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } = request
        else {
            return Err(ControllerError::Invalid(
                "the test controller only creates topics".into(),
            ));
        };
        let mut records = Vec::new();
        let mut items = Vec::new();
        for topic in topics {
            let exists = image.topics.contains_key(&topic.name);
            if !exists && !validate_only {
                let mut topic_id = [0u8; 16];
                topic_id[..8].copy_from_slice(&(image.topics.len() as u64 + 1).to_be_bytes());
                records.push(MetadataRecord::Topic {
                    name: topic.name.clone(),
                    topic_id,
                });
            }
            items.push(ItemResult {
                name: topic.name.clone(),
                error_code: if exists { TOPIC_ALREADY_EXISTS } else { 0 },
                message: None,
                topic_id: None,
            });
        }
        Ok(Decision {
            records,
            response: ControllerResponse::Items(items),
        })
    }
    fn tick(&mut self, _image: &TestImage, _now_ms: u64) -> Vec<MetadataRecord> {
        Vec::new()
    }
}

pub fn test_controller() -> ControllerFactory<TestImage> {
    std::sync::Arc::new(|| Box::new(TestController) as Box<dyn ControllerLogic<TestImage>>)
}

/// A CreateTopics request for one topic.
pub fn create_topic(name: &str) -> ControllerRequest {
    ControllerRequest::CreateTopics {
        topics: vec![crate::controller::NewTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            assignments: None,
            configs: BTreeMap::new(),
        }],
        validate_only: false,
    }
}
