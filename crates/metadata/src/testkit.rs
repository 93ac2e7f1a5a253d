//! A controller and an image driven the way the quorum shell drives them:
//! each decision's records are committed as one log entry and applied
//! before the next decision. Test builds only.

use crate::controller::{
    Controller, ControllerConfig, ControllerError, ControllerRequest, ControllerResponse,
};
use crate::image::MetadataImage;
use crate::records::{BrokerId, Endpoint, MetadataRecord, TopicId};

pub const SESSION_TIMEOUT_MS: u64 = 9_000;
/// Shorter than Kafka's five minutes so random time steps reach it.
pub const REBALANCE_INTERVAL_MS: u64 = 30_000;

pub fn config() -> ControllerConfig {
    ControllerConfig {
        broker_session_timeout_ms: SESSION_TIMEOUT_MS,
        producer_id_block_size: 1000,
        default_partitions: 3,
        default_replication_factor: 1,
        auto_leader_rebalance: true,
        leader_imbalance_check_interval_ms: REBALANCE_INTERVAL_MS,
    }
}

/// Topic ids 1, 2, 3... in the first bytes: easy to read in failures.
pub fn counting_ids() -> impl FnMut() -> TopicId + Send + 'static {
    let mut next = 0u64;
    move || {
        next += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next.to_be_bytes());
        id[8] = 0x5a;
        id
    }
}

pub fn endpoint(broker_id: BrokerId) -> Vec<Endpoint> {
    vec![Endpoint {
        name: "PLAINTEXT".into(),
        host: "127.0.0.1".into(),
        port: 9000 + broker_id as u16,
    }]
}

pub struct Sim {
    pub image: MetadataImage,
    pub controller: Controller,
    pub next_index: u64,
    pub now_ms: u64,
}

impl Sim {
    pub fn new() -> Sim {
        Sim {
            image: MetadataImage::new(),
            controller: Controller::new(config()).with_id_source(counting_ids()),
            next_index: 1,
            now_ms: 1_000,
        }
    }

    /// Commits records as one entry. The first refused record is returned as
    /// an error (the rest of the entry still applies, as on a real node).
    pub fn commit(&mut self, records: &[MetadataRecord]) -> Result<Option<u64>, String> {
        if records.is_empty() {
            return Ok(None);
        }
        let index = self.next_index;
        self.next_index += 1;
        let mut first_error = None;
        for record in records {
            if let Err(e) = self.image.apply(index, record) {
                first_error.get_or_insert(format!("{record:?} at {index}: {e}"));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Some(index)),
        }
    }

    /// Decides, commits and answers, filling in a registration's epoch as
    /// the shell does. Panics if a record does not apply.
    pub fn request(
        &mut self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        let decision = self.controller.handle(&self.image, self.now_ms, &request)?;
        let index = self
            .commit(&decision.records)
            .expect("the controller's records apply");
        Ok(match decision.response {
            ControllerResponse::RegisterBroker { .. } => ControllerResponse::RegisterBroker {
                broker_epoch: index.expect("a registration commits a record") as i64,
            },
            other => other,
        })
    }

    pub fn tick(&mut self) -> Vec<MetadataRecord> {
        let records = self.controller.tick(&self.image, self.now_ms);
        self.commit(&records)
            .expect("the controller's records apply");
        records
    }

    pub fn register(
        &mut self,
        broker_id: BrokerId,
        rack: Option<&str>,
    ) -> Result<i64, ControllerError> {
        let response = self.request(ControllerRequest::RegisterBroker {
            broker_id,
            incarnation_id: [broker_id as u8; 16],
            endpoints: endpoint(broker_id),
            rack: rack.map(str::to_string),
        })?;
        match response {
            ControllerResponse::RegisterBroker { broker_epoch } => Ok(broker_epoch),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn heartbeat(
        &mut self,
        broker_id: BrokerId,
        want_shutdown: bool,
    ) -> Result<ControllerResponse, ControllerError> {
        let broker_epoch = self.image.broker(broker_id).map_or(0, |b| b.broker_epoch);
        self.request(ControllerRequest::BrokerHeartbeat {
            broker_id,
            broker_epoch,
            applied_index: self.image.last_applied_index.unwrap_or(0),
            want_shutdown,
        })
    }

    /// A registered, unfenced broker.
    pub fn add_broker(&mut self, broker_id: BrokerId, rack: Option<&str>) {
        self.register(broker_id, rack).unwrap();
        self.heartbeat(broker_id, false).unwrap();
        assert!(self.image.is_live(broker_id));
    }
}
