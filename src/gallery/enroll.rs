//! Enrolling faces by person, and "this is not NAME": the one implementation the console, the
//! CLI (`faced enroll`) and MQTT (`enroll_last_unknown`) share, so that whether a name may
//! create a person or only add to one, and what happens when storing fails half-way, is decided
//! once.

use super::{Gallery, Match, NewSample, PersonId, SampleId, SampleKind};
use crate::error::{Error, Result};

/// Whom [`Gallery::enroll`] adds samples to. Front ends pick the rule their users expect: the
/// console's "enroll this face as…" finds or creates, MQTT refuses to add a stranger's face to
/// an existing name unless asked (`New` / `Existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollTarget<'a> {
    /// This person; [`Kind::NotFound`](crate::Kind::NotFound) if there is none.
    Id(PersonId),
    /// A new person of this name; [`Kind::Conflict`](crate::Kind::Conflict) if it is taken.
    New(&'a str),
    /// The person of this name; [`Kind::NotFound`](crate::Kind::NotFound) if there is none.
    Existing(&'a str),
    /// The person of this name, created if there is none.
    FindOrCreate(&'a str),
}

/// What [`Gallery::enroll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The person the samples were added to.
    pub person: PersonId,
    /// The person was created by this call.
    pub created: bool,
    /// The stored samples, in order.
    pub samples: Vec<SampleId>,
}

/// What [`Gallery::add_negative`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct NotThisPerson {
    /// The person's name.
    pub name: String,
    /// The stored negative sample.
    pub sample: SampleId,
    /// The face's top match before, whatever its similarity.
    pub before: Option<Match>,
    /// The face's top match after, whatever its similarity.
    pub after: Option<Match>,
}

impl Gallery {
    /// Adds `samples` to the person `to` names, creating them if `to` says so. The samples are
    /// stored all or none ([`Gallery::add_samples`]); if they fail, a person created by this
    /// call is removed again, so a failed enrolment never leaves an empty person behind.
    pub fn enroll(&mut self, to: EnrollTarget<'_>, samples: &[NewSample<'_>]) -> Result<Enrolled> {
        let (person, created) = match to {
            EnrollTarget::Id(id) => (id, false),
            EnrollTarget::New(name) => (self.add_person(name)?, true),
            EnrollTarget::Existing(name) => match self.person_by_name(name)? {
                Some(p) => (p.id, false),
                None => {
                    return Err(Error::not_found(format!(
                        "no person named {:?}",
                        name.trim()
                    )));
                }
            },
            EnrollTarget::FindOrCreate(name) => match self.person_by_name(name)? {
                Some(p) => (p.id, false),
                None => (self.add_person(name)?, true),
            },
        };
        match self.add_samples(person, samples) {
            Ok(samples) => Ok(Enrolled {
                person,
                created,
                samples,
            }),
            Err(e) => {
                if created && let Err(e2) = self.remove_person(person) {
                    tracing::error!(person = %person, "cannot remove the new, empty person: {e2}");
                }
                Err(e)
            }
        }
    }

    /// "This is not NAME": stores `sample` (whatever its `kind`) as a negative sample of
    /// `person`, so that faces at least as close to it as to the person's own samples no longer
    /// match them, and returns the face's top match before and after. The caller applies its
    /// threshold to the matches.
    pub fn add_negative(
        &mut self,
        person: PersonId,
        sample: NewSample<'_>,
    ) -> Result<NotThisPerson> {
        let p = self.require_person(person)?;
        let before = self.search(sample.embedding, 1)?.into_iter().next();
        let id = self.add_sample(
            person,
            NewSample {
                kind: SampleKind::Negative,
                ..sample
            },
        )?;
        let after = self.search(sample.embedding, 1)?.into_iter().next();
        Ok(NotThisPerson {
            name: p.name,
            sample: id,
            before,
            after,
        })
    }
}
