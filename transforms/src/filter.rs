//! `type: filter` — keeps the events that match `condition`; the others are dropped on purpose
//! (resolved as handled for their source, counted as discarded).

use serde::Deserialize;

use sessiontrail_core::component::{
    run_function_transform, ComponentTask, FunctionTransform, TransformContext, TransformOutput,
};
use sessiontrail_core::condition::{ConditionConfig, EventCondition};
use sessiontrail_core::{BuildError, Event, TransformConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Events matching this condition pass; see `core::condition` for the forms.
    pub condition: ConditionConfig,
}

#[async_trait::async_trait]
impl TransformConfig for FilterConfig {
    fn validate(&self) -> Result<(), String> {
        self.condition.compile().map(|_| ())
    }

    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError> {
        let condition = EventCondition::new(self.condition.compile()?);
        Ok(run_function_transform(Filter { condition }, cx))
    }
}

struct Filter {
    condition: EventCondition,
}

impl FunctionTransform for Filter {
    fn transform(&mut self, event: Event, output: &mut TransformOutput) {
        if self.condition.matches(&event) {
            output.emit(event);
        } else {
            output.discard(event);
        }
    }
}
