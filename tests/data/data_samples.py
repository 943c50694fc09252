"""Literal documents shared by the data tests."""

PROSE = (
    "The old harbour town lies at the mouth of a slow river, and most of its houses are built of grey stone.\n"
    "Fishing boats still leave before dawn, although tourism now brings more money than the catch.\n"
    "\n"
    "In summer the narrow streets fill with visitors who come to see the lighthouse and the medieval church.\n"
    "Local families rent rooms to them, and several bakeries sell bread that is made with flour from nearby farms.\n"
    "\n"
    "During winter the town becomes quiet again: storms close the road along the coast for days at a time,\n"
    "and the school bus has to take a longer route through the hills to reach the villages inland.\n"
)
