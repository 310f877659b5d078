"""`din simulate`: scenarios of many actors on Ray, through the same protocol functions as the commands."""
