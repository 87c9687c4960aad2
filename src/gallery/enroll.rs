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
    /// Adds `samples` to the person `to` names, creating them if `to` says so. All or none, in
    /// one transaction: a person created here is created with the samples, so neither a failed
    /// store nor a crash (power cut) between the two leaves an empty person behind.
    pub fn enroll(&mut self, to: EnrollTarget<'_>, samples: &[NewSample<'_>]) -> Result<Enrolled> {
        let person = match to {
            EnrollTarget::Id(id) => id,
            EnrollTarget::Existing(name) => {
                self.person_by_name(name)?
                    .ok_or_else(|| Error::not_found(format!("no person named {:?}", name.trim())))?
                    .id
            }
            EnrollTarget::FindOrCreate(name) => match self.person_by_name(name)? {
                Some(p) => p.id,
                None => return self.enroll_new(name, samples),
            },
            EnrollTarget::New(name) => return self.enroll_new(name, samples),
        };
        Ok(Enrolled {
            person,
            created: false,
            samples: self.add_samples(person, samples)?,
        })
    }

    fn enroll_new(&mut self, name: &str, samples: &[NewSample<'_>]) -> Result<Enrolled> {
        let (person, samples) = self.add_person_with_samples(name, samples)?;
        Ok(Enrolled {
            person,
            created: true,
            samples,
        })
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
        let id = self.add_samples_as(
            person,
            &[NewSample {
                kind: SampleKind::Negative,
                ..sample
            }],
            crate::audit::Action::NotThisPerson,
        )?[0];
        let after = self.search(sample.embedding, 1)?.into_iter().next();
        Ok(NotThisPerson {
            name: p.name,
            sample: id,
            before,
            after,
        })
    }
}
