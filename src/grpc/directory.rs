//! `DirectoryService`.

use std::sync::Arc;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::{check, enums, handle, method};
use crate::{
    domain::{OrganizationId, Role, Violation, municipality::Receiver},
    exchange::Exchange,
    proto::v1 as pb,
};

pub struct DirectoryApi {
    exchange: Arc<Exchange>,
}

impl DirectoryApi {
    /// The service itself, without the gRPC server around it: what the HTTP edge calls.
    pub fn handler(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }

    pub fn new(
        exchange: Arc<Exchange>,
    ) -> pb::directory_service_server::DirectoryServiceServer<Self> {
        pb::directory_service_server::DirectoryServiceServer::new(Self { exchange })
    }
}

fn receiver_to_proto(r: &Receiver) -> pb::Organization {
    pb::Organization {
        name: r.id.resource_name(),
        role: pb::organization::Role::Receiver as i32,
        display_name_fi: r.name_fi.clone(),
        display_name_sv: r.name_sv.clone(),
        display_name_en: r.name_en.clone(),
        municipality_codes: r.municipality_codes.clone(),
    }
}

fn kela() -> pb::Organization {
    pb::Organization {
        name: OrganizationId::kela().resource_name(),
        role: pb::organization::Role::Referrer as i32,
        display_name_fi: "Kansaneläkelaitos".into(),
        display_name_sv: "Folkpensionsanstalten".into(),
        display_name_en: "Social Insurance Institution of Finland".into(),
        municipality_codes: Vec::new(),
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        const METHOD: &str = method!("DirectoryService", "ListOrganizations");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                let role = enums::optional::<Role>(req.role, "role", &mut v);
                check(v)?;
                let (include_kela, receivers) = exchange.list_organizations(&call, role).await?;
                let mut organizations: Vec<pb::Organization> =
                    include_kela.then(kela).into_iter().collect();
                organizations.extend(receivers.iter().map(receiver_to_proto));
                Ok(pb::ListOrganizationsResponse { organizations })
            },
        )
        .await
    }

    async fn resolve_recipient(
        &self,
        request: Request<pb::ResolveRecipientRequest>,
    ) -> Result<Response<pb::ResolveRecipientResponse>, Status> {
        const METHOD: &str = method!("DirectoryService", "ResolveRecipient");
        handle(
            &self.exchange,
            request,
            METHOD,
            |exchange, call, req| async move {
                let mut v = Vec::new();
                if req.home_municipality_code.is_empty() {
                    v.push(Violation::required("home_municipality_code"));
                }
                let date = if req.date.is_empty() {
                    None
                } else {
                    let date = NaiveDate::parse_from_str(&req.date, "%Y-%m-%d").ok();
                    if date.is_none() {
                        v.push(Violation::new("date", "iso_date", "must be YYYY-MM-DD"));
                    }
                    date
                };
                check(v)?;
                let (municipality, year) = exchange
                    .resolve_recipient(&call, &req.home_municipality_code, date)
                    .await?;
                let organization = exchange
                    .registry()
                    .receivers()
                    .iter()
                    .find(|r| r.id == municipality.organizer)
                    .map(receiver_to_proto);
                Ok(pb::ResolveRecipientResponse {
                    recipient: municipality.organizer.resource_name(),
                    organization,
                    municipality_name_fi: municipality.name_fi.clone(),
                    municipality_name_sv: municipality.name_sv.clone(),
                    code_list_year: year,
                })
            },
        )
        .await
    }
}
