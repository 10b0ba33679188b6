//! ACLs: CreateAcls and DeleteAcls become [`MetadataRecord::Acl`] / [`MetadataRecord::RemoveAcl`]
//! records. A creation that exists already changes nothing (as Kafka); a deletion removes
//! every ACL its filter matches and reports them. The decision itself is
//! `strom_metadata::acl::authorize`, made by every broker from its image.

use strom_metadata::acl::{self, AclBinding, AclFilter};
use strom_metadata::records::MetadataRecord;

use super::{Controller, ControllerError};

impl Controller {
    /// Creates each valid binding; `Err` entries (already invalid) are answered as they are.
    pub async fn create_acls(
        &self,
        bindings: Vec<Result<AclBinding, String>>,
    ) -> Result<(Vec<Result<(), String>>, i64), ControllerError> {
        self.check_active()?;
        self.write(|image| {
            let mut records = Vec::new();
            let mut results = Vec::new();
            for b in &bindings {
                let r = b.clone().and_then(|b| acl::validate(&b).map(|_| b));
                match r {
                    Ok(b) => {
                        let new = !image.acls.contains(&b)
                            && !records.iter().any(|r| matches!(r, MetadataRecord::Acl { binding } if *binding == b));
                        if new {
                            records.push(MetadataRecord::Acl { binding: b });
                        }
                        results.push(Ok(()));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            Ok((records, results))
        })
        .await
    }

    /// Deletes what each filter matches; per filter, the bindings removed.
    pub async fn delete_acls(
        &self,
        filters: Vec<Result<AclFilter, String>>,
    ) -> Result<(Vec<Result<Vec<AclBinding>, String>>, i64), ControllerError> {
        self.check_active()?;
        self.write(|image| {
            let mut removed: std::collections::BTreeSet<AclBinding> = Default::default();
            let mut results = Vec::new();
            for f in &filters {
                match f {
                    Ok(f) => {
                        let matched: Vec<AclBinding> = image.acls.iter().filter(|b| f.matches(b)).cloned().collect();
                        removed.extend(matched.iter().cloned());
                        results.push(Ok(matched));
                    }
                    Err(e) => results.push(Err(e.clone())),
                }
            }
            let records = removed.into_iter().map(|binding| MetadataRecord::RemoveAcl { binding }).collect();
            Ok((records, results))
        })
        .await
    }
}
