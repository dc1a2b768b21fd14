//! `ReportingService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{check, enums, from_timestamp, handle, method};
use crate::{
    domain::{Violation, statistics::Dimension},
    error::Error,
    exchange::{Exchange, reporting::ReferralStatistics},
    proto::v1 as pb,
};

pub struct ReportingApi {
    exchange: Arc<Exchange>,
}

impl ReportingApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(
        exchange: Arc<Exchange>,
    ) -> pb::reporting_service_server::ReportingServiceServer<Self> {
        pb::reporting_service_server::ReportingServiceServer::new(Self { exchange })
    }
}

fn to_proto(table: ReferralStatistics) -> pb::GetReferralStatisticsResponse {
    let cells = table
        .cells
        .into_iter()
        .map(|cell| {
            let keys = table
                .dimensions
                .iter()
                .zip(&cell.keys)
                .filter_map(|(d, key)| key.clone().map(|k| (d.as_str().to_owned(), k)))
                .collect();
            let mut out = pb::StatisticsCell {
                keys,
                suppressed: cell.figures.is_none(),
                ..Default::default()
            };
            if let Some(f) = cell.figures {
                out.referral_count = f.referral_count;
                out.person_count = f.person_count;
                out.received_count = f.received_count;
                out.median_working_days_to_receipt = f.median_working_days_to_receipt;
                out.received_within_deadline_count = f.received_within_deadline_count;
                out.assessment_started_within_deadline_count =
                    f.assessment_started_within_deadline_count;
                out.overdue_count = f.overdue_count;
            }
            out
        })
        .collect();
    pb::GetReferralStatisticsResponse {
        cells,
        min_cell_size: i32::try_from(table.min_cell_size).unwrap_or(i32::MAX),
    }
}

#[tonic::async_trait]
impl pb::reporting_service_server::ReportingService for ReportingApi {
    async fn get_referral_statistics(
        &self,
        request: Request<pb::GetReferralStatisticsRequest>,
    ) -> Result<Response<pb::GetReferralStatisticsResponse>, Status> {
        const METHOD: &str = method!("ReportingService", "GetReferralStatistics");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let mut time = |t: Option<&pbjson_types::Timestamp>, field: &str| {
                    if t.is_none() {
                        v.push(Violation::required(field));
                    }
                    from_timestamp(t, field, &mut v)
                };
                let start = time(req.start_time.as_ref(), "start_time");
                let end = time(req.end_time.as_ref(), "end_time");
                let dimensions: Vec<Dimension> = req
                    .group_by
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        enums::required::<Dimension>(*d, &format!("group_by[{i}]"), &mut v)
                    })
                    .collect();
                check(v)?;
                let (Some(start), Some(end)) = (start, end) else {
                    return Err(Error::internal("a checked time is missing"));
                };
                let table = exchange
                    .referral_statistics(&call, start, end, dimensions)
                    .await?;
                Ok(to_proto(table))
            },
        )
        .await
    }
}

/// The figure columns of a statistics table, in the order of `StatisticsCell`.
pub const FIGURES: [&str; 8] = [
    "suppressed",
    "referral_count",
    "person_count",
    "received_count",
    "median_working_days_to_receipt",
    "received_within_deadline_count",
    "assessment_started_within_deadline_count",
    "overdue_count",
];

/// What a total shows in place of a dimension's value.
pub const ALL: &str = "(all)";

/// One cell as the rows of a table: the key of each of `dimensions` ([`ALL`] for a total over it),
/// then the figures; a suppressed cell's figures are empty.
pub fn table_row(dimensions: &[String], cell: &pb::StatisticsCell) -> Vec<String> {
    let mut row: Vec<String> = dimensions
        .iter()
        .map(|d| cell.keys.get(d).cloned().unwrap_or_else(|| ALL.to_owned()))
        .collect();
    row.push(cell.suppressed.to_string());
    if cell.suppressed {
        row.extend(std::iter::repeat_n(String::new(), FIGURES.len() - 1));
    } else {
        row.extend([
            cell.referral_count.to_string(),
            cell.person_count.to_string(),
            cell.received_count.to_string(),
            cell.median_working_days_to_receipt
                .map(|m| m.to_string())
                .unwrap_or_default(),
            cell.received_within_deadline_count.to_string(),
            cell.assessment_started_within_deadline_count.to_string(),
            cell.overdue_count.to_string(),
        ]);
    }
    row
}

/// The names of the dimensions a request groups by, in its order (unknown numbers skipped: the
/// request was refused anyway).
pub fn dimension_names(group_by: &[i32]) -> Vec<String> {
    group_by
        .iter()
        .filter_map(|d| pb::Dimension::try_from(*d).ok())
        .map(|d| d.as_str_name().to_owned())
        .collect()
}

/// A statistics table as CSV (RFC 4180, `\n` line ends): a header of the dimensions and the
/// figures, then one line per cell.
pub fn csv(
    dimensions: &[String],
    response: &pb::GetReferralStatisticsResponse,
) -> Result<String, Error> {
    let mut out = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header = dimensions.iter().map(String::as_str).chain(FIGURES);
    out.write_record(header).map_err(Error::internal)?;
    for cell in &response.cells {
        out.write_record(table_row(dimensions, cell))
            .map_err(Error::internal)?;
    }
    let bytes = out.into_inner().map_err(Error::internal)?;
    String::from_utf8(bytes).map_err(Error::internal)
}
