//! Authorized operations as Metadata, DescribeCluster, DescribeGroups and
//! ConsumerGroupDescribe report them when asked (KIP-430).
//!
//! Weir has no authorizer, so, as Kafka without one, every operation that
//! applies to a resource type is authorized. The answer is a bit field with
//! bit `code` set for each operation, `code` being Kafka's AclOperation code
//! (Kafka's `Utils.to32BitField`). The sets are Kafka's
//! `AclEntry.supportedOperations`. A field nobody asked for keeps the
//! sentinel `i32::MIN`, which the schemas carry as their default.

/// Kafka's AclOperation codes (only those that apply to some resource here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AclOperation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

use AclOperation::*;

pub const TOPIC_OPERATIONS: &[AclOperation] = &[
    Read,
    Write,
    Create,
    Describe,
    Delete,
    Alter,
    DescribeConfigs,
    AlterConfigs,
];
/// Kafka 4.x: groups have configs (KIP-848), so their configs operations apply too.
pub const GROUP_OPERATIONS: &[AclOperation] =
    &[Read, Describe, Delete, DescribeConfigs, AlterConfigs];
pub const CLUSTER_OPERATIONS: &[AclOperation] = &[
    Create,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    Alter,
    Describe,
];

/// The bit field of `operations`.
pub fn bit_field(operations: &[AclOperation]) -> i32 {
    operations
        .iter()
        .fold(0i32, |bits, op| bits | (1i32 << (*op as u8)))
}

/// What a request that asked (`include`) gets for a resource with these
/// operations; the schema's "not asked" sentinel otherwise.
pub fn authorized_operations(include: bool, operations: &[AclOperation]) -> i32 {
    if include {
        bit_field(operations)
    } else {
        i32::MIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_match_kafka_without_an_authorizer() {
        // READ..ALTER_CONFIGS without CLUSTER_ACTION: bits 3-8, 10, 11.
        assert_eq!(bit_field(TOPIC_OPERATIONS), 0b1101_1111_1000);
        // READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
        assert_eq!(bit_field(GROUP_OPERATIONS), 0b1101_0100_1000);
        // CREATE, ALTER..IDEMPOTENT_WRITE.
        assert_eq!(bit_field(CLUSTER_OPERATIONS), 0b1_1111_1010_0000);
        assert_eq!(authorized_operations(false, TOPIC_OPERATIONS), i32::MIN);
    }
}
