"""The adapters' JSON form of events (bus messages, stored deliveries) round-trips."""

import attrs
import orjson
from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.serialization import EVENT_KINDS, event_from_dict, event_to_dict
from chatserver.domain.messages import Event

ids = st.integers(min_value=0, max_value=2**63 - 1)  # ids and times are 64-bit
events = st.one_of(
    *(
        st.builds(cls, **{f.name: ids for f in attrs.fields(cls) if f.type is int})
        for cls in EVENT_KINDS.values()
    )
)


@given(events)
def test_an_event_round_trips_through_its_json_form(event: Event) -> None:
    data = event_to_dict(event)
    assert data == {"kind": data["kind"], **attrs.asdict(event)}
    assert event_from_dict(orjson.loads(orjson.dumps(data))) == event
