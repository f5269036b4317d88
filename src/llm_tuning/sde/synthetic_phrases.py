"""Phrase banks of the synthetic MASA-style review generator (sde/synthetic.py).

Keyed by language, then by a slot keyword (the first keyword of the built-in MASA slots), then by sentiment
(positive, neutral, negative). No phrase of one aspect holds another aspect's keyword, so a phrase speaks of
one aspect only. Slots without a bank use GENERIC with their first keyword.
"""

from __future__ import annotations

PHRASES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "zh": {
        "食品": (
            ("菜品味道很棒", "这里的食品非常新鲜可口", "招牌菜做得特别好吃", "每道菜都很入味"),
            ("菜的味道一般般", "食品中规中矩，没有惊喜", "菜品口味还行吧"),
            ("菜做得太咸了，很难吃", "食品不新鲜，吃完不舒服", "菜品味道很差"),
        ),
        "饮品": (
            ("饮品很好喝", "奶茶香浓顺滑", "自制果汁特别清爽"),
            ("饮料味道普通", "饮品一般，没什么特色", "咖啡还算可以"),
            ("饮品太甜了，不好喝", "饮料像是兑了水，很难喝", "咖啡又酸又苦"),
        ),
        "价格": (
            ("价格很实惠", "性价比很高，价格便宜", "人均不贵，物超所值"),
            ("价格中等", "价格和别家差不多", "消费水平适中"),
            ("价格太贵了", "价格偏高，不值这个钱", "人均消费高得离谱"),
        ),
        "卫生": (
            ("店里卫生很好，桌面干干净净", "餐具消毒得很干净", "卫生条件不错"),
            ("卫生情况一般", "环境卫生还过得去", "卫生马马虎虎"),
            ("卫生很差，地上都是油", "餐具不干净，卫生堪忧", "桌子黏糊糊的，太脏了"),
        ),
        "服务": (
            ("服务员态度很热情", "服务周到，有求必应", "店员很有礼貌，服务很贴心"),
            ("服务态度一般", "服务员不冷不热", "服务中规中矩"),
            ("服务员态度很差，爱答不理", "服务太差了，叫了半天没人理", "店员脸色难看，服务恶劣"),
        ),
        "停车": (
            ("停车很方便", "门口就有免费停车位", "有地下停车场，停车不用愁"),
            ("停车一般", "停车还算可以", "停车位不多也不少"),
            ("停车特别难，找不到车位", "附近没地方停车", "停车场总是满的，停车很麻烦"),
        ),
        "交通": (
            ("交通很便利，地铁站出来就到", "交通方便，公交直达", "位置好找，交通便捷"),
            ("交通一般", "交通还算方便，就是要走一段路", "交通不算好也不算差"),
            ("交通很不方便，打车都难", "交通不便，离地铁站很远", "位置偏僻，交通太差"),
        ),
        "排队": (
            ("不用排队，随到随吃", "等候时间很短", "排队很快就轮到我们了"),
            ("排队等了二十分钟左右", "等候时间一般", "排队情况还行"),
            ("排队排了两个小时", "等候太久了，等得很烦", "门口排长队，等位太痛苦"),
        ),
        "点菜": (
            ("点菜后上菜很快", "扫码点菜很方便，上菜迅速", "上菜速度很快"),
            ("上菜速度一般", "点菜上菜不快不慢", "上菜速度还行"),
            ("上菜太慢了，催了好几次", "点菜后等了半小时才上菜", "上菜速度慢得离谱"),
        ),
        "装修": (
            ("装修很有格调", "装修精致，很适合拍照", "店面装修得很漂亮"),
            ("装修普普通通", "装修风格一般", "装修简单，没什么特色"),
            ("装修很陈旧", "装修又土又旧", "装修粗糙，看着很廉价"),
        ),
        "嘈杂": (
            ("店里很安静，不嘈杂", "环境安静，适合聊天", "一点都不吵，很清静"),
            ("有点嘈杂但能接受", "嘈杂程度一般", "声音不算大也不算小"),
            ("店里太嘈杂了", "吵得根本听不清说话", "环境嘈杂，音乐声很大"),
        ),
    },
    "en": {
        "food": (
            (
                "The food was delicious",
                "Every dish tasted fresh and flavourful",
                "The food here is excellent",
            ),
            (
                "The food was okay, nothing special",
                "The dishes were average",
                "Food was decent but forgettable",
            ),
            ("The food was bland and greasy", "The dishes tasted stale", "The food was honestly terrible"),
        ),
        "drink": (
            ("The drinks were refreshing", "Great cocktails and lovely fresh juice", "The coffee was superb"),
            ("The drinks were fine", "Drinks were average", "The tea was alright"),
            ("The drinks were watered down", "The coffee tasted burnt", "The drinks were far too sweet"),
        ),
        "price": (
            ("Prices are very reasonable", "Great value for money", "It was surprisingly cheap"),
            (
                "Prices are about average",
                "The price was fair, neither cheap nor expensive",
                "Prices are typical for the area",
            ),
            ("It is way overpriced", "The prices are far too high", "Way too expensive for what you get"),
        ),
        "hygiene": (
            (
                "The place was spotless",
                "Tables and cutlery were very clean",
                "Hygiene standards are clearly high",
            ),
            ("Cleanliness was acceptable", "Hygiene was so-so", "The place was reasonably clean"),
            (
                "The tables were sticky and dirty",
                "Hygiene was poor, the floor was filthy",
                "I saw dirty plates everywhere",
            ),
        ),
        "service": (
            (
                "The staff were friendly and attentive",
                "Service was quick and polite",
                "Our waiter was wonderful",
            ),
            ("Service was okay", "The staff were neither rude nor friendly", "Service was average"),
            ("The staff were rude", "Service was slow and unfriendly", "The waiter ignored us for ages"),
        ),
        "parking": (
            ("Parking was easy", "There is a big free car park", "Plenty of parking right outside"),
            (
                "Parking was manageable",
                "Finding parking took a while but was fine",
                "Parking is limited but okay",
            ),
            (
                "Parking was a nightmare",
                "There is nowhere to park nearby",
                "We circled for half an hour looking for parking",
            ),
        ),
    },
}

GENERIC = {
    "zh": (
        ("{kw}很好", "{kw}让人满意", "{kw}非常不错"),
        ("{kw}一般", "{kw}还行"),
        ("{kw}很差", "{kw}让人失望"),
    ),
    "en": (
        ("The {kw} was great", "I loved the {kw}", "The {kw} was excellent"),
        ("The {kw} was okay", "The {kw} was average"),
        ("The {kw} was poor", "I was disappointed by the {kw}"),
    ),
}

FILLERS = {
    "zh": (
        "今天和朋友一起来吃饭",
        "这家店在商场三楼",
        "周末中午来的",
        "第一次来这家店",
        "是朋友推荐的",
        "我们一共四个人",
    ),
    "en": (
        "We came here on a Friday night",
        "I visited with two friends",
        "The restaurant is on the third floor of the mall",
        "It was my first visit",
        "A friend recommended this place",
        "There were four of us",
    ),
}
