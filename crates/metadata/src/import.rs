//! Upgrade in place: a data directory written by single-node Weir before the
//! metadata quorum existed holds its topics in `meta/topics/`. On its first
//! start with the quorum, the broker sends them here and they become
//! ordinary metadata records, keeping their topic ids (clients and fetch
//! sessions know topics by id).

use crate::controller::{ControllerResponse, Decision, ImportedTopic, ItemResult};
use crate::image::MetadataImage;
use crate::records::{ConfigResource, MetadataRecord};

/// The records that import `topics`: each topic not already in the image
/// (by name or id) with all its partitions on `replicas`, led by the first;
/// its configs; and the producer-id floor. Idempotent: importing twice adds
/// nothing the second time.
pub fn import_decision(
    image: &MetadataImage,
    topics: &[ImportedTopic],
    next_producer_id: i64,
) -> Decision {
    let mut records = Vec::new();
    let mut items = Vec::new();
    for t in topics {
        let known = image.topic_by_name(&t.name).is_some() || image.topic(&t.topic_id).is_some();
        let valid = t.partitions >= 1 && !t.replicas.is_empty() && t.topic_id != [0; 16];
        if known || !valid {
            items.push(ItemResult {
                name: t.name.clone(),
                error_code: if known { 36 } else { 42 }, // TOPIC_ALREADY_EXISTS / INVALID_REQUEST
                message: Some(if known {
                    format!("topic {} is already in the metadata log", t.name)
                } else {
                    format!("topic {} cannot be imported as written", t.name)
                }),
                topic_id: Some(t.topic_id),
            });
            continue;
        }
        records.push(MetadataRecord::Topic {
            name: t.name.clone(),
            topic_id: t.topic_id,
        });
        for partition in 0..t.partitions {
            records.push(MetadataRecord::Partition {
                topic_id: t.topic_id,
                partition,
                replicas: t.replicas.clone(),
                isr: t.replicas.clone(),
                leader: t.replicas[0],
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        for (name, value) in &t.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(t.name.clone()),
                name: name.clone(),
                value: Some(value.clone()),
            });
        }
        items.push(ItemResult {
            name: t.name.clone(),
            error_code: 0,
            message: None,
            topic_id: Some(t.topic_id),
        });
    }
    if next_producer_id > image.next_producer_id {
        // The ids the old node may have handed out, as one block of its own.
        records.push(MetadataRecord::ProducerIds {
            broker_id: -1,
            broker_epoch: -1,
            first_producer_id: image.next_producer_id,
            size: next_producer_id - image.next_producer_id,
        });
    }
    Decision {
        records,
        response: ControllerResponse::Items(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u8) -> ImportedTopic {
        ImportedTopic {
            name: name.into(),
            topic_id: [id; 16],
            partitions: 3,
            replicas: vec![1],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        }
    }

    fn apply_all(image: &mut MetadataImage, index: u64, d: &Decision) {
        for r in &d.records {
            image.apply(index, r).expect("import records apply");
        }
    }

    #[test]
    fn imported_topics_keep_their_ids_and_configs_and_the_producer_id_floor_rises() {
        let mut image = MetadataImage::new();
        let d = import_decision(&image, &[topic("orders", 7), topic("events", 8)], 3000);
        apply_all(&mut image, 1, &d);
        let orders = image.topic_by_name("orders").expect("imported");
        assert_eq!(orders.topic_id, [7; 16]);
        assert_eq!(orders.partitions.len(), 3);
        assert_eq!(orders.partitions[&2].leader, 1);
        assert_eq!(
            image
                .configs_of(&ConfigResource::Topic("orders".into()))
                .unwrap()["retention.ms"],
            "1000"
        );
        assert_eq!(image.next_producer_id, 3000);

        // Twice: nothing new, and the answer says why.
        let again = import_decision(&image, &[topic("orders", 7)], 3000);
        assert!(again.records.is_empty());
        let ControllerResponse::Items(items) = again.response else {
            panic!()
        };
        assert_eq!(items[0].error_code, 36);
    }
}
