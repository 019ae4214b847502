"""Fixed few-shot examples of the OLMES generative QA tasks (`FEWSHOT_SOURCES` in allenai/olmes
oe_eval/tasks/fewshot_sources.py): "OLMES:drop", "OLMES:triviaqa", "OLMES:jeopardy".

They come from each dataset's train split, which the shared data does not hold, so they are
kept here as facts of the benchmark, in the processed form the task formatters use. The
examples were read off public ports of that file (allenai/olmes itself was not reachable);
the first five of each source are the ones a 5-shot prompt uses.
"""

# fmt: off
DROP_SHOTS: list[dict] = [  # section ids nfl_2201, nfl_1491, history_269, history_690, history_2184
    {
        "passage": "To start the season, the Lions traveled south to Tampa, Florida to take on the Tampa Bay Buccaneers. The Lions scored first in the first quarter with a 23-yard field goal by Jason Hanson. The Buccaneers tied it up with a 38-yard field goal by Connor Barth, then took the lead when Aqib Talib intercepted a pass from Matthew Stafford and ran it in 28 yards. The Lions responded with a 28-yard field goal. In the second quarter, Detroit took the lead with a 36-yard touchdown catch by Calvin Johnson, and later added more points when Tony Scheffler caught an 11-yard TD pass. Tampa Bay responded with a 31-yard field goal just before halftime. The second half was relatively quiet, with each team only scoring one touchdown. First, Detroit's Calvin Johnson caught a 1-yard pass in the third quarter. The game's final points came when Mike Williams of Tampa Bay caught a 5-yard pass.  The Lions won their regular season opener for the first time since 2007",
        "question": "How many field goals did the Lions score?",
        "answer": ["2"],
    },
    {
        "passage": "Coming off their road win over the Redskins, the Chiefs went home, donned their Dallas Texans throwbacks, and played a Week 7 AFL Legacy game with the San Diego Chargers. Kansas City would find themselves trailing in the first quarter as Chargers quarterback Philip Rivers completed a 3-yard touchdown pass to wide receiver Malcom Floyd, followed by a 10-yard touchdown pass to wide receiver Vincent Jackson. San Diego would add onto their lead in the second quarter with a 20-yard and a 39-yard field goal from kicker Nate Kaeding. The Chiefs would get onto the board in the third quarter with quarterback Matt Cassel completing a 7-yard touchdown pass to wide receiver Dwayne Bowe, but the Chargers kept their momentum going with Rivers finding running back Darren Sproles on a 58-yard touchdown pass. In the fourth quarter, San Diego sealed the win with Kaeding's 19-yard field goal and fullback Jacob Hester recovering a blocked punt in the end zone for a touchdown. With the loss, Kansas City went into their bye week at 1-6. Larry Johnson was suspended for two weeks after he made offensive comments about Todd Haley and made offensive comments about homosexuals on Twitter and in public.",
        "question": "which player scored the longest field goal?",
        "answer": ["Nate Kaeding"],
    },
    {
        "passage": "In 1344, Momchil, the independent Bulgarian ruler of the Rhodope and Aegean regions, whose army grew to 2,000 men, took an important role in the Byzantine civil war. While at first he supported John Kantakouzenos, from the spring of 1344 Momchil reneged, provoked by the aggression of the Ottoman allies. In June he defeated the Ottoman fleet near the Portogalos bay. According to sources, at night the Bulgarian ruler sent boats to burn the anchored Ottoman ships and soon after he defeated the army of Kantakouzenos at Mosynopolis. Probably the first local ruler to become aware of the impending Ottoman threat, Momchil unsuccessfully pleaded with the emperors of Bulgaria and Byzantium for help. Even though his troops continued the resistance in the Eastern Rhodopes, in May 1345 the Turks led by Umur Beg marched from Asia Minor and devastated Bulgarian territories driving away people and livestock. Soon after, on 7 July 1345, Ottoman forces under Umur Beg defeated Momchil's army in the battle of Peritor near his capital Xanthi. Sources attest that the independent ruler perished in the battle without leaving asuccessor, and with little political will or leadership left to counter the Ottoman invasion.",
        "question": "When did Momchil defeat the Ottoman fleet near the Portogalos bay?",
        "answer": ["June 1344"],
    },
    {
        "passage": "The French king, John II, had been held captive in England. The Treaty of Br\u00e9tigny set his ransom at 3\u00a0million\u00a0crowns and allowed for hostages to be held in lieu of John. The hostages included two of his sons, several princes and nobles, four inhabitants of Paris, and two citizens from each of the nineteen principal towns of France. While these hostages were held, John returned to France to try and raise funds to pay the ransom. In 1362 John's son Louis of Anjou, a hostage in English-held Calais, escaped captivity. So, with his stand-in hostage gone, John felt honor-bound to return to captivity in England. The French crown had been at odds with Navarre  since 1354, and in 1363 the Navarrese used the captivity of John II in London and the political weakness of the Dauphin to try to seize power. Although there was no formal treaty, Edward III supported the Navarrese moves, particularly as there was a prospect that he might gain control over the northern and western provinces as a consequence. With this in mind, Edward deliberately slowed the peace negotiations. In 1364, John II died in London, while still in honourable captivity. Charles V succeeded him as king of France. On 7 May 1364, one month after the dauphin's accession and three days before his coronation as Charles V, the Navarrese suffered a crushing defeat at the Battle of Cocherel.",
        "question": "What did one of John II's replacements do in captivity?",
        "answer": ["escaped captivity"],
    },
    {
        "passage": "As of the census of 2000, there were 218,590 people, 79,667 households, and 60,387 families residing in the county.  The population density was 496 people per square mile (192/km\u00b2). There were 83,146 housing units at an average density of 189 per square mile (73/km\u00b2). The racial makeup of the county was 86.77% Race (United States Census), 9.27% Race (United States Census), 0.23% Race (United States Census), 1.52% Race (United States Census), 0.06% Race (United States Census), 0.69% from Race (United States Census), and 1.47% from two or more races.  1.91% of the population were Race (United States Census) or Race (United States Census) of any race. 22.5% were of German people, 13.1% Irish people, 9.8% Italian people, 9.2% English, 8.1% \"American\" and 6.0% Polish ancestry.",
        "question": "How many more people were there than families?",
        "answer": ["158203"],
    },
]

TRIVIAQA_SHOTS: list[tuple[str, str]] = [  # (question, answer value)
    ("From which country did Angola achieve independence in 1975?", "Portugal"),
    ("In architecture, what is a lancet?", "A window"),
    ("In which ocean is the island group the Maldives?", "The Indian Ocean"),
    ("In the UK these books are called \u2018Where\u2019s Wally?\u2019 What is his name in the USA?", "Waldo"),
    ("The conflict between rival political factions the Girondins and the Jacobins, during the French Revolution, was known as The Reign of what?", "Terror"),
]

JEOPARDY_SHOTS: list[tuple[str, str, str]] = [  # (category, question, answer)
    ("HISTORY", "For the last 8 years of his life, Galileo was under house arrest for espousing this man's theory", "Copernicus"),
    ("ESPN's TOP 10 ALL-TIME ATHLETES", "No. 2: 1912 Olympian; football star at Carlisle Indian School; 6 MLB seasons with the Reds, Giants & Braves", "Jim Thorpe"),
    ("EVERYBODY TALKS ABOUT IT...", "The city of Yuma in this state has a record average of 4,055 hours of sunshine each year", "Arizona"),
    ("THE COMPANY LINE", "In 1963, live on \"The Art Linkletter Show\", this company served its billionth burger", "McDonald's"),
    ("EPITAPHS & TRIBUTES", "Signer of the Dec. of Indep., framer of the Constitution of Mass., second President of the United States", "John Adams"),
]
# fmt: on
