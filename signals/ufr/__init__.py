"""The unified feature representation: types, schemas, the online row codec and the torch batch builder."""
