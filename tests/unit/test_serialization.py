"""The adapters' JSON form of events (bus messages, stored deliveries) round-trips."""

import attrs
import orjson
from hypothesis import given
from hypothesis import strategies as st

from chatserver.adapters.serialization import (
    DELIVERY_KINDS,
    EVENT_KINDS,
    dump_delivery,
    event_from_dict,
    event_to_dict,
    load_delivery,
)
from chatserver.domain.messages import Delivery, Event, FileRef

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


deliveries = st.one_of(
    *(
        st.builds(
            cls,
            **{f.name: ids for f in attrs.fields(cls) if f.type is int},
            **({"file": st.none() | st.builds(FileRef, id=ids, size=ids)}
               if "file" in attrs.fields_dict(cls) else {}),
        )
        for cls in DELIVERY_KINDS.values()
    )
)


@given(deliveries)
def test_a_stored_delivery_is_what_attrs_asdict_gives_and_loads_back(delivery: Delivery) -> None:
    kind, body = dump_delivery(delivery)
    assert DELIVERY_KINDS[kind] is type(delivery)
    assert orjson.loads(body) == attrs.asdict(delivery)
    assert load_delivery(kind, body) == delivery
