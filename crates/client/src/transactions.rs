//! Transactions from the operator's side: ListTransactions and
//! DescribeTransactions (KIP-664), as `weir txn list|describe` uses them.

use weir_protocol::messages::{describe_transactions, find_coordinator, list_transactions};

use crate::client::Client;
use crate::error::ClientError;

/// One transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// One transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// -1 when no transaction has started.
    pub start_ms: i64,
    pub partitions: Vec<(String, Vec<i32>)>,
}

impl Client {
    /// Transactional ids, filtered by state names and producer ids (empty = all).
    pub async fn list_transactions(
        &mut self,
        states: &[String],
        producer_ids: &[i64],
    ) -> Result<Vec<TransactionListing>, ClientError> {
        let request = list_transactions::ListTransactionsRequest {
            state_filters: states.to_vec(),
            producer_id_filters: producer_ids.to_vec(),
            ..Default::default()
        };
        let response = self.send_any(&request).await?;
        ClientError::check(response.error_code, None, || "list transactions".to_owned())?;
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(ClientError::Kafka {
                code: weir_protocol::error_code::ErrorCode::InvalidRequest,
                message: Some(format!("unknown transaction state '{unknown}'")),
                context: "list transactions".to_owned(),
            });
        }
        let mut listed: Vec<TransactionListing> = response
            .transaction_states
            .into_iter()
            .map(|t| TransactionListing {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                state: t.transaction_state,
            })
            .collect();
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(listed)
    }

    /// The node coordinating `transactional_id` (FindCoordinator key type 1).
    pub async fn find_transaction_coordinator(
        &mut self,
        transactional_id: &str,
    ) -> Result<i32, ClientError> {
        let version = self
            .version_for::<find_coordinator::FindCoordinatorRequest>()
            .await?;
        let request = find_coordinator::FindCoordinatorRequest {
            key: transactional_id.to_owned(),
            key_type: 1,
            coordinator_keys: vec![transactional_id.to_owned()],
        };
        let response = self.send_any(&request).await?;
        let (code, message, node) = if version >= 4 {
            let Some(c) = response.coordinators.into_iter().next() else {
                return Err(ClientError::Protocol {
                    addr: self.bootstrap().to_owned(),
                    detail: "FindCoordinator response has no coordinator".to_owned(),
                });
            };
            (c.error_code, c.error_message, c.node_id)
        } else {
            (
                response.error_code,
                response.error_message,
                response.node_id,
            )
        };
        ClientError::check(code, message.as_deref(), || {
            format!("find coordinator of transactional id '{transactional_id}'")
        })?;
        self.metadata(Some(&[]), false).await?;
        Ok(node)
    }

    /// One transactional id, asked of its coordinator.
    pub async fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, ClientError> {
        let node = self.find_transaction_coordinator(transactional_id).await?;
        let request = describe_transactions::DescribeTransactionsRequest {
            transactional_ids: vec![transactional_id.to_owned()],
        };
        let response = self.send_to_node(node, &request, 0).await?;
        let Some(t) = response.transaction_states.into_iter().next() else {
            return Err(ClientError::Protocol {
                addr: self.bootstrap().to_owned(),
                detail: "DescribeTransactions response is empty".to_owned(),
            });
        };
        ClientError::check(t.error_code, None, || {
            format!("describe transactional id '{transactional_id}'")
        })?;
        Ok(TransactionDescription {
            transactional_id: t.transactional_id,
            state: t.transaction_state,
            producer_id: t.producer_id,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            start_ms: t.transaction_start_time_ms,
            partitions: t
                .topics
                .into_iter()
                .map(|d| (d.topic, d.partitions))
                .collect(),
        })
    }
}
